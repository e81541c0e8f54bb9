"""TRL's GRPOTrainer on the real-model task, in its own process: held-out accuracy against training time.

The same checkpoint (smollm2-135m-instruct, converted by this package), train and held-out prompts
(reasoning-gym chain_sum, chat template), reward (reasoning-gym's verifier, binary, last number of
the reply), group size, new tokens, learning rate (constant) and β as the rllib-rpp runs of
`benchmarks.real_model`; TRL's own loss and advantages (its defaults: loss_type "dapo", group
scaling), transformers generation on the CPU. Greedy held-out evaluations every `eval_every_s`
seconds of training, their time left out of the clock, as `rllib-rpp train` does."""

from __future__ import annotations

import json
import sys
import tempfile
import time


def measure(args: dict) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from envs.evaluation import greedy_completions
    from envs.prompts import load_prompt_rows
    from envs.tasks import reasoning_gym as rg
    from rpp_hub.models import resolve_model_path

    torch.set_num_threads(args.get("threads", 2))
    path = resolve_model_path(args["model"])
    train_rows, eval_rows = load_prompt_rows(args["train"]), load_prompt_rows(args["eval"])
    tok = AutoTokenizer.from_pretrained(path)
    eval_texts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in eval_rows]
    eval_entries = [r["task_entry"] for r in eval_rows]

    def reasoning_gym_reward(completions, task_entry, **kwargs):
        return rg.verify(completions, [json.loads(e) for e in task_entry])

    state = {"train_s": 0.0, "mark": None, "evals": [], "last_eval": -1e9, "steps": 0}

    def evaluate(model) -> float:
        model.eval()
        replies = greedy_completions(model, tok, eval_texts, max_new_tokens=args["max_new_tokens"])
        model.train()
        return sum(rg.verify(replies, eval_entries)) / len(eval_entries)

    class Clock(TrainerCallback):
        def on_train_begin(self, a, s, control, model=None, **k):
            state["evals"].append([0.0, evaluate(model)])
            state["mark"] = time.perf_counter()

        def on_step_end(self, a, s, control, model=None, **k):
            now = time.perf_counter()
            state["train_s"] += now - state["mark"]
            state["steps"] += 1
            if state["train_s"] - state["last_eval"] >= args["eval_every_s"] or state["train_s"] >= args["budget_s"]:
                state["evals"].append([state["train_s"], evaluate(model)])
                state["last_eval"] = state["train_s"]
                print(f"TRL {state['train_s']:.0f} s: held-out {state['evals'][-1][1]:.3f}", file=sys.stderr,
                      flush=True)
            if state["train_s"] >= args["budget_s"]:
                control.should_training_stop = True
            state["mark"] = time.perf_counter()

    per_step = args["num_prompts"] * args["samples_per_prompt"] // args["minibatches"]
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=per_step,
        num_generations=args["samples_per_prompt"], steps_per_generation=args["minibatches"],
        gradient_accumulation_steps=1, max_completion_length=args["max_new_tokens"], beta=args["kl_coef"],
        learning_rate=args["lr"], lr_scheduler_type="constant", max_grad_norm=1.0, temperature=1.0,
        use_cpu=True, bf16=False, gradient_checkpointing=args.get("gradient_checkpointing", False),
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, max_steps=100_000, seed=args["seed"],
    )
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "task_entry": json.dumps(r["task_entry"])}
                                          for r in train_rows])
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                          reward_funcs=reasoning_gym_reward, args=config, train_dataset=dataset, processing_class=tok,
                          callbacks=[Clock()])
    trainer.train()
    completions = state["steps"] * per_step
    return {"evals": state["evals"], "train_seconds": state["train_s"], "optimizer_steps": state["steps"],
            "completions_per_s": completions / max(state["train_s"], 1e-9)}


if __name__ == "__main__":
    print("RESULT " + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
