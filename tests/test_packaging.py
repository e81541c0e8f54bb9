"""Set-up stays quiet: package metadata in the form current setuptools expects, the extras README names."""

import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_metadata_raises_no_setuptools_warnings_and_names_the_tracking_extra(monkeypatch):
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), "pyproject.toml")
    mine = [str(w.message) for w in caught if "pkg_resources" not in str(w.message)]
    assert mine == []  # e.g. "`project.license` as a TOML table is deprecated"
    assert dist.metadata.license_expression == "Apache-2.0"
    track = " ".join(dist.extras_require["track"])
    assert "wandb" in track and "mlflow" in track
    assert "pip install -e '.[track]'" in (ROOT / "README.md").read_text()
