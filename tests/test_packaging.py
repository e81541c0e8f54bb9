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


def test_the_default_set_up_installs_openenv_without_its_conflicting_pins():
    """CI runs the OpenEnv tests: `make setup` installs the `openenv` extra (its runtime, fastmcp 4 on mcp 2, which
    vLLM 0.32 needs) and openenv itself with --no-deps (its own pin, fastmcp<4, would take mcp below 2)."""
    from setuptools.config.pyprojecttoml import read_configuration

    extras = read_configuration(ROOT / "pyproject.toml")["project"]["optional-dependencies"]
    assert any(d.startswith("fastmcp>=4") for d in extras["openenv"])
    assert not any(d.split("=")[0].strip("<>") == "openenv" for deps in extras.values() for d in deps)
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'extras="${1:-cpu,dev,track,real,openenv}"' in setup and 'openenv_pkg="openenv==0.10.0"' in setup
    assert 'pip install -q --no-deps "$openenv_pkg"' in setup
