"""Memory per learner: two FSDP learners against one learner (one command).

    python -m benchmarks.fsdp_memory

The random-initialised 151,936-vocabulary model (`random:qwen-vocab-tiny`), one training
iteration of 16 prompts x 2 samples x 64 response tokens (EOS ignored), learners as Ray actors
(gloo on CPU). After the iteration each learner reports the bytes it holds in parameters,
gradients and Adam state (its local shards under FSDP) and its peak RSS.
Results: benchmarks/results/fsdp_memory.json.
"""

from __future__ import annotations

import resource

import ray

from benchmarks.common import save, table

MiB = 1 << 20


def learner_memory(learner) -> dict:
    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    params = [local(p) for p in learner.policy_lm().parameters()]
    grads = [local(p.grad) for p in learner.policy_lm().parameters() if p.grad is not None]
    optim = [local(v) for o in learner._named_optimizers.values() for s in o.state.values() for v in s.values()
             if hasattr(v, "numel") and v.numel() > 1]
    size = lambda ts: sum(t.numel() * t.element_size() for t in ts) / MiB  # noqa: E731
    return {"parameters_mib": round(size(params), 1), "gradients_mib": round(size(grads), 1),
            "adam_state_mib": round(size(optim), 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def measure(learners: int, strategy: str) -> list[dict]:
    from rllib_rpp import ReinforcePPConfig

    config = (ReinforcePPConfig()
              .environment(env_config={"prompts": "arithmetic", "reward_funcs": ["exact_match"]})
              .rl_module(model_config={"model": "random:qwen-vocab-tiny"})
              .generation(max_new_tokens=64, ignore_eos=True)
              .training(lr=1e-5, num_prompts_per_iteration=16, num_samples_per_prompt=2, minibatch_size=32 // learners,
                        learner_strategy=strategy)
              .learners(num_learners=learners)
              .debugging(seed=0))
    algo = config.build_algo()
    algo.train()
    out = [r.get() for r in algo.learner_group.foreach_learner(learner_memory).result_or_errors]
    algo.stop()
    return out


def main() -> None:
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    for learners, strategy in ((1, "ddp"), (2, "fsdp")):
        for rank, m in enumerate(measure(learners, strategy)):
            layout = f"{learners} learner{'s' if learners > 1 else ''} ({strategy})"
            rows.append({"layout": layout, "learner": rank, **m})
    one = rows[0]
    for r in rows:
        r["params vs one learner"] = round(r["parameters_mib"] / one["parameters_mib"], 2)
        r["Adam vs one learner"] = round(r["adam_state_mib"] / one["adam_state_mib"], 2)
    print(table(rows, ["layout", "learner", "parameters_mib", "gradients_mib", "adam_state_mib", "peak_rss_mib",
                       "params vs one learner", "Adam vs one learner"]))
    print(f"saved {save('fsdp_memory', {'rows': rows})}")


if __name__ == "__main__":
    main()
