"""One TRL GRPOTrainer measurement in its own process, on the same workload as rllib-rpp.

Same model (tiny-arith), prompts (arithmetic train split), batch shape (64 prompts x 4
samples = one generation batch of 256, <= 5 new tokens), 2 optimizer steps per generation
batch (steps_per_generation=2), a reference model (beta > 0) and the exact-match reward;
transformers generation on CPU (no vLLM), as rllib-rpp's default sampler. `task="smollm2"`: the
real shape (the `smollm2` preset's model and reasoning-gym prompts, its verifier as the reward);
`gradient_checkpointing`: TRL's default is True, False is faster on a CPU."""

from __future__ import annotations

import json
import sys
import tempfile
import time


def measure(args: dict) -> dict:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from envs.tasks.arithmetic import arithmetic_prompts
    from rpp_hub.models import resolve_model_path

    if args.get("task") == "smollm2":
        from envs.prompts import load_prompt_rows
        from envs.tasks.reasoning_gym import verify
        from rllib_rpp.app.presets import smollm2

        preset = smollm2()
        path = resolve_model_path(preset.model_config["model"])
        rows = [{"prompt": r["prompt"], "task_entry": json.dumps(r["task_entry"])}
                for r in load_prompt_rows(preset.env_config["prompts"])]

        def reward(completions, task_entry, **kwargs):
            return verify(completions, [json.loads(e) for e in task_entry])
    else:
        path = resolve_model_path(args.get("model", "tiny-arith"))
        rows = arithmetic_prompts("train")

        def reward(completions, answer, **kwargs):
            return [float(c.strip() == a) for c, a in zip(completions, answer)]
    per_step = args["num_prompts"] * args["samples_per_prompt"] // args["minibatches"]
    warmup, iters = args.get("warmup", 2), args["iterations"]
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    matched = {} if args.get("defaults") else {  # else TRL's own defaults (β 0: no reference model)
        "gradient_accumulation_steps": 1, "steps_per_generation": args["minibatches"], "beta": args["kl_coef"],
        "learning_rate": args["lr"], "max_grad_norm": 1.0, "temperature": 1.0}
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=per_step, num_generations=args["samples_per_prompt"],
        max_completion_length=args["max_new_tokens"], use_cpu=True, bf16=False, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, max_steps=args["minibatches"] * (warmup + iters), seed=0,
        **({"gradient_checkpointing": args["gradient_checkpointing"]} if "gradient_checkpointing" in args else {}),
        **({"generation_kwargs": {"min_new_tokens": args["max_new_tokens"]}} if args.get("ignore_eos") else {}),
        **matched,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=reward, args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(path), callbacks=[Clock()],
    )
    trainer.train()
    start = stamps[args["minibatches"] * warmup - 1]
    dt = stamps[-1] - start
    completions = iters * args["num_prompts"] * args["samples_per_prompt"]
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    mean_len = sum(lengths[-iters * args["minibatches"]:]) / max(1, len(lengths[-iters * args["minibatches"]:]))
    return {"seconds": dt, "completions_per_s": completions / dt, "tokens_per_s": completions * mean_len / dt,
            "iteration_s": dt / iters}


if __name__ == "__main__":
    print("RESULT " + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
