"""`python -m rllib_rpp.options`: rewrite README's option tables from the option table."""

from pathlib import Path

from rllib_rpp.options import rewrite_readme

readme = Path(__file__).resolve().parents[2] / "README.md"
text = readme.read_text()
new = rewrite_readme(text)
readme.write_text(new)
print(f"{readme}: {'rewritten' if new != text else 'already up to date'}")
