"""Training under ``torchrun --nproc_per_node 2`` (gloo, CPU): replicas agree and equal a 1-process run with the
same global batch, for DDP and FSDP2 (zero2, zero3); checkpoints move between plugins.

The runs learn the loss's ``logvar`` (its gradient is averaged by hand, no wrapper owns it), and ``TinyConvAE``'s
decoder blocks sit in nested containers (FSDP2 units are found inside them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opensora_ae.train import checkpoint

from train_helpers import load_safetensors, run_training, tiny_config, write_config, write_fixed_clips

STEPS = 3
ATOL = 1e-5
LEARNED_LOGVAR = dict(perceptual_loss_weight=0.0, kl_loss_weight=0.0, logvar_init=0.5, learn_logvar=True)


def _config(data: Path, **overrides):
    return tiny_config(data, vae_loss_config=LEARNED_LOGVAR, **overrides)


@pytest.fixture(scope="module")
def fixed_data(tmp_path_factory) -> Path:
    # Two different clips: one batch of 2 in one process, one clip per rank with 2 ranks - the global batch is the
    # whole data set at every step either way, and the ranks' gradients differ (their averaging is tested).
    return write_fixed_clips(tmp_path_factory.mktemp("fixed"), count=2, distinct=True)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, fixed_data) -> Path:
    tmp = tmp_path_factory.mktemp("single")
    cfg = write_config(tmp / "cfg.py", _config(fixed_data, batch_size=2, max_steps=STEPS, ckpt_every=STEPS))
    run_training([str(cfg), "--save-dir", str(tmp / "run")])
    return tmp / "run"


def _final(run_dir: Path) -> Path:
    return checkpoint.list_checkpoints(run_dir)[-1]


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = ATOL) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), (key, (a[key] - b[key]).abs().max())


def _two_process_run(tmp_path: Path, fixed_data: Path, plugin: str) -> Path:
    cfg = write_config(tmp_path / "cfg.py", _config(fixed_data, batch_size=1, max_steps=STEPS, ckpt_every=STEPS,
                                                       plugin=plugin))
    run_training([str(cfg), "--save-dir", str(tmp_path / "run")], nproc=2, instrumented=True,
                 env={"TRAIN_TEST_DUMP_RANKS": "1"})
    return tmp_path / "run"


@pytest.mark.slow
def test_ddp_two_ranks_identical_and_equal_to_one_process(tmp_path, fixed_data, single_process_run):
    run_dir = _two_process_run(tmp_path, fixed_data, "ddp")
    rank0 = load_safetensors(run_dir / f"rank0-step{STEPS}.safetensors")
    rank1 = load_safetensors(run_dir / f"rank1-step{STEPS}.safetensors")
    assert "loss.logvar" in rank0 and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    single = _final(single_process_run)
    for name in ("model.safetensors", "ema.safetensors", "loss.safetensors"):
        _assert_close(load_safetensors(_final(run_dir) / name), load_safetensors(single / name))
    assert load_safetensors(single / "loss.safetensors")["logvar"].item() != LEARNED_LOGVAR["logvar_init"]


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["zero2", "zero3"])
def test_fsdp_two_ranks_equal_one_process_and_resume_single_process(tmp_path, fixed_data, single_process_run, plugin):
    run_dir = _two_process_run(tmp_path, fixed_data, plugin)
    final = _final(run_dir)
    single = _final(single_process_run)
    for name in ("model.safetensors", "ema.safetensors", "loss.safetensors"):
        _assert_close(load_safetensors(final / name), load_safetensors(single / name))
    sharded_optim = torch.load(final / "optimizer.pt", weights_only=True)["state"]
    single_optim = torch.load(single / "optimizer.pt", weights_only=True)["state"]
    for name, state in single_optim.items():
        _assert_close({"exp_avg": state["exp_avg"]}, {"exp_avg": sharded_optim[name]["exp_avg"]})
    if plugin == "zero2":
        # An FSDP checkpoint (full state dicts) resumes in a single-process run.
        resume_cfg = write_config(tmp_path / "resume.py", _config(fixed_data, batch_size=2, max_steps=STEPS + 1,
                                                                      ckpt_every=0))
        run_training([str(resume_cfg), "--load", str(final), "--save-dir", str(tmp_path / "resumed")])
        assert _final(tmp_path / "resumed").name.endswith(f"global_step{STEPS + 1}")


def _run(tmp_path: Path, fixed_data: Path, name: str, nproc: int, **overrides) -> Path:
    batch_size = 2 // nproc
    cfg = write_config(tmp_path / f"{name}.py", _config(fixed_data, batch_size=batch_size, max_steps=STEPS,
                                                        ckpt_every=STEPS, **overrides))
    run_training([str(cfg), "--save-dir", str(tmp_path / name)], nproc=nproc)
    return _final(tmp_path / name)


@pytest.mark.slow
def test_fsdp_bf16_mixed_precision_close_to_autocast_and_fp32(tmp_path, fixed_data, single_process_run):
    """zero2 in bf16 gathers bf16 parameters and reduces fp32 gradients (MixedPrecisionPolicy). After a few steps
    its weights differ on average from a 1-process bf16 autocast run and from the fp32 run by a few percent of how
    far training moved them (measured: under 1 %). Single elements may differ by up to a step: Adam's normalised
    update turns the rounding of a near-zero gradient into a full step of the other sign."""
    sharded = load_safetensors(_run(tmp_path, fixed_data, "zero2_bf16", 2, plugin="zero2", dtype="bf16") /
                               "model.safetensors")
    autocast = load_safetensors(_run(tmp_path, fixed_data, "single_bf16", 1, dtype="bf16") / "model.safetensors")
    fp32 = load_safetensors(_final(single_process_run) / "model.safetensors")
    initial = load_safetensors(_run(tmp_path, fixed_data, "initial", 1, lr_scheduler=dict(warmup_steps=0),
                                    optim=dict(cls="AdamW", lr=0.0)) / "model.safetensors")
    assert any(not torch.equal(sharded[key], fp32[key]) for key in fp32)  # bf16 did run
    for key in fp32:
        moved = (fp32[key] - initial[key]).abs().mean()
        assert moved > 1e-3, key
        assert (sharded[key] - autocast[key]).abs().mean() < 0.05 * moved, key
        assert (sharded[key] - fp32[key]).abs().mean() < 0.05 * moved, key


def _two_node_run(tmp_path: Path, fixed_data: Path, plugin: str, timeout: int = 420) -> Path:
    """Two torchrun agents on 127.0.0.1 (``--nnodes 2 --nproc_per_node 1``, c10d rendezvous): one rank each."""
    import os
    import subprocess
    import sys

    from train_helpers import REPO, _free_port

    cfg = write_config(tmp_path / "cfg.py", _config(fixed_data, batch_size=1, max_steps=STEPS, ckpt_every=STEPS,
                                                       plugin=plugin))
    endpoint = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", f"two-node-{plugin}",
               str(REPO / "scripts/vae/train.py"), str(cfg), "--save-dir", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    agents = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]
    try:
        outputs = [agent.communicate(timeout=timeout)[0] for agent in agents]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    for agent, output in zip(agents, outputs):
        assert agent.returncode == 0, output[-4000:]
    return tmp_path / "run"


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["ddp", "zero2"])
def test_two_torchrun_agents_equal_one_node_with_two_processes(tmp_path, fixed_data, plugin):
    (tmp_path / "nodes").mkdir()
    (tmp_path / "procs").mkdir()
    two_nodes = _final(_two_node_run(tmp_path / "nodes", fixed_data, plugin))
    one_node = _final(_two_process_run(tmp_path / "procs", fixed_data, plugin))
    assert two_nodes.name == one_node.name and one_node.name.endswith(f"global_step{STEPS}")
    for name in ("model.safetensors", "ema.safetensors", "loss.safetensors"):
        a, b = load_safetensors(two_nodes / name), load_safetensors(one_node / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
