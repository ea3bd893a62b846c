"""Training infrastructure pieces that need no process group: optimizer implementation pass-through (fused /
foreach), FSDP2 mixed-precision policy selection, wandb run-id reuse and the loss-curve plot."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from opensora_ae.train.optim import build_optimizer


def _linear(device: str = "cpu") -> nn.Module:
    return nn.Linear(4, 3).to(device)


@pytest.mark.parametrize("extra, expected", [
    ({}, {"fused": None, "foreach": None}),
    ({"fused": True}, {"fused": True, "foreach": None}),
    ({"foreach": False}, {"fused": None, "foreach": False}),
    ({"fused": False, "foreach": True}, {"fused": False, "foreach": True}),
])
def test_optimizer_passes_fused_and_foreach_through(extra, expected):
    optimizer = build_optimizer(_linear().parameters(), dict(cls="AdamW", lr=1e-3, **extra))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {k: optimizer.defaults[k] for k in expected} == expected


def test_fused_cpu_adamw_steps_like_the_default():
    torch.manual_seed(0)
    fused_model, plain_model = _linear(), _linear()
    plain_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(fused_model.parameters(), dict(cls="AdamW", lr=1e-2, weight_decay=0.1, fused=True))
    plain = build_optimizer(plain_model.parameters(), dict(cls="AdamW", lr=1e-2, weight_decay=0.1, foreach=False))
    x = torch.randn(8, 4)
    for _ in range(3):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert not torch.equal(fused_model.weight, _linear().weight)


def test_optimizer_rejects_fused_and_foreach_together_and_non_bools():
    with pytest.raises(ValueError, match="optim.fused and optim.foreach are both true"):
        build_optimizer(_linear().parameters(), dict(fused=True, foreach=True))
    with pytest.raises(ValueError, match=r"optim.fused='yes' must be true, false or none"):
        build_optimizer(_linear().parameters(), dict(fused="yes"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_optimizer_is_fused_by_default_on_cuda():
    assert build_optimizer(_linear("cuda").parameters(), dict(cls="AdamW")).defaults["fused"] is True
    assert build_optimizer(_linear("cuda").parameters(), dict(cls="AdamW", foreach=True)).defaults["fused"] is None


@pytest.fixture
def single_rank_group(tmp_path):
    """A one-process gloo group, so FSDP2 can shard in this process; destroyed afterwards."""
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fsdp2_gathers_in_the_run_dtype_and_keeps_fp32_masters_and_gradients(single_rank_group, dtype):
    from opensora_ae.train import parallel
    from train_helpers import TinyConvAE

    torch.manual_seed(0)
    model = TinyConvAE()
    ctx = parallel.DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    wrapped = parallel.wrap_model(model, ctx, "zero2", keep_unsharded=model.get_last_layer(), param_dtype=dtype)
    seen = {}
    for name, module in (("encoder", model.encoder[0]), ("conv_out", model.conv_out)):
        module.register_forward_pre_hook(lambda m, args, name=name: seen.update({name: (m.weight.dtype, args[0].dtype)}))
    x_rec = wrapped(torch.rand(1, 3, 2, 8, 8) * 2 - 1)[0]
    assert seen == {"encoder": (dtype, dtype), "conv_out": (dtype, dtype)}
    assert x_rec.dtype == dtype
    x_rec.float().square().mean().backward()
    for param in model.parameters():
        assert param.dtype == torch.float32 and param.grad.dtype == torch.float32
    assert parallel.fsdp_mp_policy(dtype).reduce_dtype == (None if dtype == torch.float32 else torch.float32)


def _logger(run_dir, **kwargs):
    from opensora_ae.train.logging import TrainLogger

    return TrainLogger(run_dir, is_main=True, total_steps=4, **kwargs)


@pytest.mark.slow  # three wandb.init calls: ~10-45 s on 2 shared cores
def test_wandb_offline_run_id_is_stored_in_the_run_folder_and_reused(tmp_path, monkeypatch):
    import json
    import re

    from opensora_ae.train.logging import WANDB_ID_FILE

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    ids = []
    for _ in range(2):  # the first run, then the one resumed with --load (same run folder)
        logger = _logger(tmp_path, use_wandb=True, run_name="demo")
        ids.append(logger.wandb.id)
        logger.close()
    stored = (tmp_path / WANDB_ID_FILE).read_text().strip()
    assert ids == [stored, stored] and len(stored) >= 8
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(e["mode"], e["run_id"]) for e in events if e.get("event") == "wandb"] == [("offline", stored)] * 2
    # One offline folder per init, offline-run-<second>-<id>; wandb appends -1 when two inits share a second.
    folders = [p.name for p in (tmp_path / "wandb").glob("offline-run-*")]
    assert len(folders) == 2 and all(re.fullmatch(rf"offline-run-\d+_\d+-{stored}(-\d+)?", name) for name in folders)
    other = tmp_path / "other"
    other.mkdir()
    fresh = _logger(other, use_wandb=True)
    assert fresh.wandb.id != stored
    fresh.close()


def test_loss_curve_leaves_the_global_backend_alone_and_skips_repeated_terms(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt
    from PIL import Image

    from opensora_ae.train.logging import loss_series

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        logger = _logger(tmp_path)
        for step in range(1, 4):
            logger.accumulate({"loss": 1.0 / step + 1e-6, "loss_nll": 1.0 / step, "loss_recon": 1.0 / step,
                               "loss_kl": 0.1 * step, "loss_gen": 0.0})
            logger.step(step, step, logger.window_metrics(), log=True, epoch=0)
        figures = plt.get_fignums()
        path = logger.plot_loss_curve()
        logger.close()
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figures
    finally:
        matplotlib.use(previous)
    assert Image.open(path).size == (700, 400)
    series = loss_series(logger.history)
    assert list(series) == ["loss", "loss_kl"]  # loss_nll, loss_recon: within 1e-3 of loss; loss_gen: zero
    assert series["loss_kl"] == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))]


def test_optional_packages_missing_skip_the_plot_and_refuse_wandb_in_one_line(tmp_path, monkeypatch, capsys):
    """matplotlib and wandb are extras: without matplotlib the curve is skipped with a notice; --wandb True
    without wandb is one error naming the extra."""
    from opensora_ae.train.logging import TrainLogger

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    logger = _logger(tmp_path)
    logger.accumulate({"loss": 1.0})
    logger.step(1, 1, logger.window_metrics(), log=True, epoch=0)
    assert logger.plot_loss_curve() is None and not (tmp_path / "loss_curve.png").exists()
    logger.close()
    assert "pip install 'opensora_ae[plot]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ValueError, match=r"--wandb True needs the wandb package: pip install 'opensora_ae\[wandb\]'"):
        TrainLogger(tmp_path / "w", is_main=True, total_steps=1, use_wandb=True)
