import os

# Nothing may be downloaded: unknown ids must fail fast instead of trying the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_path() -> str:
    from envs.models import resolve_model_path

    return resolve_model_path("tiny-arith")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_path):
    from envs.models import load_tokenizer

    return load_tokenizer(tiny_path)


def pytest_collection_modifyitems(config, items):
    # An in-process vLLM engine binds threads and re-seeds the process: run those tests last.
    items.sort(key=lambda item: item.get_closest_marker("vllm") is not None)


@pytest.fixture(scope="session")
def _ray_session():
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session):
    """One local Ray cluster shared by the modules that need it (started once: ~6 s each time)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)


def pytest_configure(config):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py
