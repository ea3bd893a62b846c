"""``scripts/vae/train.py`` with test instrumentation, driven by environment variables.

* ``TRAIN_TEST_KILL_AFTER_STEP=N``: the process SIGKILLs itself right after optimizer step ``N`` (a crash with
  no chance to clean up).
* ``TRAIN_TEST_SIGNAL_AFTER_STEP=N``: the process sends itself SIGTERM after optimizer step ``N`` (preemption).
* ``TRAIN_TEST_DUMP_RANKS=1``: every checkpoint also writes each rank's own copy of the weights to
  ``<run_dir>/rank{R}-step{S}.safetensors`` (DDP), with the loss's parameters as ``loss.*``, so tests can compare
  replicas (not for FSDP2, whose ranks hold different shards).
"""

from __future__ import annotations

import os
import signal
import sys

from safetensors.torch import save_file

from opensora_ae.train import checkpoint, logging as train_logging, loop


def _install_signal(after_step: int, signum: int) -> None:
    original = train_logging.TrainLogger.step

    def step(self, step: int, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == after_step:
            os.kill(os.getpid(), signum)

    train_logging.TrainLogger.step = step


def _install_rank_dump() -> None:
    original = checkpoint.save_checkpoint

    def save(run_dir, ctx, trainables, *args, **kwargs):
        path = original(run_dir, ctx, trainables, *args, **kwargs)
        states = args[2] if len(args) > 2 else kwargs["states"]
        state = trainables[0].model.state_dict()
        if any(hasattr(v, "full_tensor") for v in state.values()):
            return path  # FSDP2 shards differ per rank by design: nothing to compare
        weights = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        if trainables[0].loss is not None:  # the loss's replicated parameters (learnable logvar) too
            weights.update({f"loss.{k}": v.detach().cpu() for k, v in trainables[0].loss.state_dict().items()})
        save_file(weights, os.path.join(run_dir, f"rank{ctx.rank}-step{states.global_step}.safetensors"))
        return path

    loop.save_checkpoint = save


if __name__ == "__main__":
    if os.environ.get("TRAIN_TEST_KILL_AFTER_STEP"):
        _install_signal(int(os.environ["TRAIN_TEST_KILL_AFTER_STEP"]), signal.SIGKILL)
    if os.environ.get("TRAIN_TEST_SIGNAL_AFTER_STEP"):
        _install_signal(int(os.environ["TRAIN_TEST_SIGNAL_AFTER_STEP"]), signal.SIGTERM)
    if os.environ.get("TRAIN_TEST_DUMP_RANKS"):
        _install_rank_dump()
    from opensora_ae.config import parse_args

    loop.train(parse_args(sys.argv[1:], extra_keys=loop.OPTIONAL_KEYS))
