"""Training under ``torchrun --nproc_per_node 2`` (gloo, CPU): replicas agree and equal a 1-process run with the
same global batch, for DDP and FSDP2 (zero2, zero3); checkpoints move between plugins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opensora_ae.train import checkpoint

from train_helpers import load_safetensors, run_training, tiny_config, write_config, write_fixed_clips

STEPS = 3
ATOL = 1e-5


@pytest.fixture(scope="module")
def fixed_data(tmp_path_factory) -> Path:
    # Same content in every clip: the global batch is the same whichever rank draws which sample.
    return write_fixed_clips(tmp_path_factory.mktemp("fixed"), count=8, distinct=False)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, fixed_data) -> Path:
    tmp = tmp_path_factory.mktemp("single")
    cfg = write_config(tmp / "cfg.py", tiny_config(fixed_data, batch_size=4, max_steps=STEPS, ckpt_every=STEPS))
    run_training([str(cfg), "--save-dir", str(tmp / "run")])
    return tmp / "run"


def _final(run_dir: Path) -> Path:
    return checkpoint.list_checkpoints(run_dir)[-1]


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = ATOL) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), (key, (a[key] - b[key]).abs().max())


def _two_process_run(tmp_path: Path, fixed_data: Path, plugin: str) -> Path:
    cfg = write_config(tmp_path / "cfg.py", tiny_config(fixed_data, batch_size=2, max_steps=STEPS, ckpt_every=STEPS,
                                                         plugin=plugin))
    run_training([str(cfg), "--save-dir", str(tmp_path / "run")], nproc=2, instrumented=True,
                 env={"TRAIN_TEST_DUMP_RANKS": "1"})
    return tmp_path / "run"


@pytest.mark.slow
def test_ddp_two_ranks_identical_and_equal_to_one_process(tmp_path, fixed_data, single_process_run):
    run_dir = _two_process_run(tmp_path, fixed_data, "ddp")
    rank0 = load_safetensors(run_dir / f"rank0-step{STEPS}.safetensors")
    rank1 = load_safetensors(run_dir / f"rank1-step{STEPS}.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    single = _final(single_process_run)
    _assert_close(load_safetensors(_final(run_dir) / "model.safetensors"), load_safetensors(single / "model.safetensors"))
    _assert_close(load_safetensors(_final(run_dir) / "ema.safetensors"), load_safetensors(single / "ema.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["zero2", "zero3"])
def test_fsdp_two_ranks_equal_one_process_and_resume_single_process(tmp_path, fixed_data, single_process_run, plugin):
    run_dir = _two_process_run(tmp_path, fixed_data, plugin)
    final = _final(run_dir)
    single = _final(single_process_run)
    _assert_close(load_safetensors(final / "model.safetensors"), load_safetensors(single / "model.safetensors"))
    _assert_close(load_safetensors(final / "ema.safetensors"), load_safetensors(single / "ema.safetensors"))
    sharded_optim = torch.load(final / "optimizer.pt", weights_only=False)["state"]
    single_optim = torch.load(single / "optimizer.pt", weights_only=False)["state"]
    for name, state in single_optim.items():
        _assert_close({"exp_avg": state["exp_avg"]}, {"exp_avg": sharded_optim[name]["exp_avg"]})
    if plugin == "zero2":
        # An FSDP checkpoint (full state dicts) resumes in a single-process run.
        resume_cfg = write_config(tmp_path / "resume.py", tiny_config(fixed_data, batch_size=4, max_steps=STEPS + 1,
                                                                      ckpt_every=0))
        run_training([str(resume_cfg), "--load", str(final), "--save-dir", str(tmp_path / "resumed")])
        assert _final(tmp_path / "resumed").name.endswith(f"global_step{STEPS + 1}")
