"""Where models and tokenizers come from: a local directory, a Hugging Face id, or a built-in name.

Built-in names (`tiny-arith`, `tiny-arith-rm`, `tiny-arith-verbose`, `tiny-arith-length-rm`,
`smollm2-135m-instruct`, `random:<shape>` of `rpp_hub.synthetic.SHAPES`) are built on first use and
cached; every API in this project that takes a model name goes through `resolve_model_path`, so
they work everywhere a path does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rpp_hub.registry import Registry

# The built-in models: name -> "module:function" that builds it on first use (cached) and returns
# its directory. Imported only when asked for, so this module never imports the builders.
BUILTIN_MODELS = Registry("built-in model", callable, kind_name="model builder", paths=False, entries={
    "tiny-arith": "envs.tiny_arith:ensure_tiny_arith",
    "tiny-arith-rm": "envs.reward_model:ensure_tiny_arith_rm",
    "tiny-arith-verbose": "envs.tiny_arith:ensure_tiny_arith_verbose",
    "tiny-arith-length-rm": "envs.reward_model:ensure_length_biased_rm",
    "smollm2-135m-instruct": "rpp_hub.smollm2:ensure_smollm2",  # a real model, from a PyPI package's GGUF
})
# Built-in families: prefix -> "module:function" taking the rest of the name.
BUILTIN_PREFIXES = Registry("built-in model family", callable, kind_name="model builder", paths=False, entries={
    "random:": "rpp_hub.synthetic:ensure_random_model",  # a random-initialised model of a real shape
})


class ModelNotFoundError(ValueError):
    """A model name that is neither built in, nor a local directory, nor loadable by id."""


def ensure_builtin(name: str, rebuild: bool = False) -> str:
    """The directory of a built-in model (any name `resolve_model_path` knows), built if missing or `rebuild`."""
    if name in BUILTIN_MODELS:
        return str(BUILTIN_MODELS.resolve(name)(rebuild=rebuild))
    for prefix in BUILTIN_PREFIXES:
        if name.startswith(prefix):
            return str(BUILTIN_PREFIXES.resolve(prefix)(name[len(prefix):], rebuild=rebuild))
    raise ModelNotFoundError(f"{name!r} is not a built-in model; built-in names: {', '.join(BUILTIN_MODELS)} "
                             f"and {', '.join(p + '<shape>' for p in BUILTIN_PREFIXES)}")


def is_builtin(name) -> bool:
    return isinstance(name, str) and (name in BUILTIN_MODELS or name.startswith(tuple(BUILTIN_PREFIXES)))


def resolve_model_path(name_or_path: str) -> str:
    """Local directory for a built-in name; the argument itself for a path or a hub id."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ModelNotFoundError(
            f"model must be a non-empty name or path, got {name_or_path!r}; "
            f"built-in names: {', '.join(BUILTIN_MODELS)}"
        )
    name = str(name_or_path)
    return ensure_builtin(name) if is_builtin(name) else name


# What a Hugging Face model directory holds: config.json for configs and models, and at least
# one of these for a tokenizer.
CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model", "tiktoken.model")


def _check_model_dir(path: str, what: str) -> None:
    """Refuse a directory without the files loading the `what` needs, naming what was expected."""
    files = sorted(os.listdir(path))
    if what == "tokenizer":
        if any(f in files for f in TOKENIZER_FILES):
            return
        missing = f"no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})"
    elif CONFIG_FILE in files:
        return
    else:
        missing = f"no {CONFIG_FILE}"
    shown = ", ".join(files[:10]) + (f", ... ({len(files)} entries)" if len(files) > 10 else "")
    raise ModelNotFoundError(
        f"directory {path!r} is not a model directory: it has {missing}, so the {what} cannot be "
        f"loaded from it. A Hugging Face model directory holds {CONFIG_FILE}, the weights (*.safetensors) "
        f"and tokenizer files (e.g. tokenizer.json, tokenizer_config.json); this one holds "
        f"{shown or 'nothing (it is empty)'}"
    )


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE asks for no network access."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def in_local_hub_cache(repo_id: str) -> bool:
    """Whether `repo_id` has a downloaded snapshot in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except Exception:  # not a valid hub id (e.g. a path that does not exist), or no huggingface_hub
        return False
    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


_HUB_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (one short probe per process)."""
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if endpoint not in _HUB_REACHABLE:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(endpoint, timeout=timeout_s).close()
            _HUB_REACHABLE[endpoint] = True
        except urllib.error.HTTPError:  # it answered, with an error status
            _HUB_REACHABLE[endpoint] = True
        except (OSError, ValueError):
            _HUB_REACHABLE[endpoint] = False
    return _HUB_REACHABLE[endpoint]


def _unknown_model(name: str, reason: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"unknown model {name!r}: not a built-in name ({', '.join(BUILTIN_MODELS)}), not a "
        f"local directory, and not loadable as a Hugging Face id: {reason}"
    )


def load_pretrained(loader, name: str, what: str, **kwargs) -> Any:
    """`loader(path)` for a built-in name, a local directory or a hub id.

    A hub id in the local cache is read from it (`local_files_only=True`); one that is not is
    downloaded, unless HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set or the hub does not answer a
    short probe: then it fails at once, not after the hub client's minute of retries.
    """
    path = resolve_model_path(name)
    is_dir = os.path.isdir(path)
    if is_dir:
        _check_model_dir(path, what)
    elif in_local_hub_cache(path):
        kwargs.setdefault("local_files_only", True)
    elif hub_offline() or not hub_reachable():
        from huggingface_hub import constants

        why = "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set" if hub_offline() else "the hub cannot be reached"
        raise _unknown_model(name, f"it is not in the local cache ({constants.HF_HUB_CACHE}) and {why}.")
    try:
        return loader(path, **kwargs)
    except (OSError, ValueError) as e:
        if is_dir:
            raise ModelNotFoundError(f"could not load the {what} from directory {path!r}: {e}") from e
        raise _unknown_model(name, f"Original error: {e}") from e


def load_tokenizer(name_or_path: str, *, pad_token: str | None = None):
    """AutoTokenizer for `name_or_path`; refuses a tokenizer without a pad token.

    Batched generation and scoring need padding. Pass `pad_token` (for example the EOS token's
    text) to set one explicitly rather than having it chosen silently.
    """
    from transformers import AutoTokenizer

    tok = load_pretrained(AutoTokenizer.from_pretrained, name_or_path, "tokenizer")
    if pad_token is not None:
        tok.pad_token = pad_token
    if tok.pad_token_id is None:
        raise ValueError(
            f"the tokenizer of {name_or_path!r} has no pad token; batched generation needs one. "
            f"Set `pad_token=` (e.g. pad_token={tok.eos_token!r}, its EOS token)."
        )
    return tok


def load_causal_lm(name_or_path: str, *, dtype: str = "float32", **kwargs):
    """AutoModelForCausalLM in `dtype`, dropout off (train mode must not change log-probs)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = load_pretrained(
        AutoModelForCausalLM.from_pretrained,
        name_or_path,
        "causal LM",
        dtype=getattr(torch, dtype),
        **kwargs,
    )
    disable_dropout(model)
    return model


def meta_causal_lm(name_or_path: str, *, dtype: str = "float32"):
    """The model's architecture on the meta device: no weights read or allocated (a sharded
    learner allocates only its shards, then receives their values)."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = model_config_of(name_or_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    disable_dropout(model)
    return model


def disable_dropout(model) -> None:
    """Zero every dropout probability: pi_old must equal pi_theta before the first step."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop"):
        if cfg is not None and isinstance(getattr(cfg, key, None), float):
            setattr(cfg, key, 0.0)


def model_config_of(name_or_path: str):
    """The model's transformers config (config.json only, no weights; a `random:` shape is not built)."""
    from transformers import AutoConfig

    if str(name_or_path).startswith("random:"):
        from rpp_hub.synthetic import model_config

        return model_config(str(name_or_path)[len("random:"):])
    return load_pretrained(AutoConfig.from_pretrained, name_or_path, "config")


def model_max_length(name_or_path: str) -> int | None:
    """Longest sequence the model's config admits, or None when it does not say."""
    cfg = model_config_of(name_or_path)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
