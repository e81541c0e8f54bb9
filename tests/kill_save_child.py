"""Child for the interrupted-save tests: `python tests/kill_save_child.py POINT PATH OUT`.

"rllib_write": trains 1 iteration and saves to PATH (weights to OUT.1), trains 1 more (weights to
OUT.2), then saves to PATH again and SIGKILLs itself half-way through RLlib writing its files.
"swap_old" / "swap_new": saves the finished checkpoint directory OUT over PATH through the same
atomic save and dies with the old checkpoint just moved aside / the new one just moved in (the
old one not yet deleted); no Ray needed, so no training here."""

import os
import shutil
import signal
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import rllib_rpp.checkpoints as ckpt  # noqa: E402


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point):
    if point == "rllib_write":
        import ray.rllib.utils.checkpoints as rllib_ckpt

        dump, calls = rllib_ckpt.pickle.dump, []

        def half_then_die(obj, f, *a, **k):
            calls.append(1)
            if len(calls) == 3:  # the third state file: write half of it, then die
                import io
                import pickle

                buf = io.BytesIO()
                pickle.dump(obj, buf, *a, **k)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                die()
            return dump(obj, f, *a, **k)

        rllib_ckpt.pickle.dump = half_then_die
    elif point == "manifest":
        ckpt.write_manifest = lambda root: die()
    else:
        replace, calls = os.replace, []

        def replace_then_die(src, dst):
            replace(src, dst)
            calls.append(1)
            if (point == "swap_old" and len(calls) == 1) or (point == "swap_new" and len(calls) == 2):
                die()

        ckpt.os.replace = replace_then_die


def main(point, path, out):
    if point != "rllib_write":
        arm(point)
        ckpt.save_atomically(path, lambda tmp: shutil.copytree(out, tmp))
        sys.exit(f"the save finished: the kill at {point!r} did not happen")
    import ray
    import torch

    from rllib_rpp.app.presets import tiny_arith

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    algo = tiny_arith(num_prompts=8, seed=1).build_algo()
    algo.train()
    algo.save_to_path(path)
    torch.save(algo.get_policy_state_dict(), f"{out}.1")
    algo.train()
    weights = algo.get_policy_state_dict()
    torch.save(weights, f"{out}.2")
    arm(point)
    algo.save_to_path(path)
    sys.exit(f"the save finished: the kill at {point!r} did not happen")


if __name__ == "__main__":
    main(*sys.argv[1:4])
