"""Nothing lost, nobody in: hostile or broken checkpoints, run folders owned by one run, interrupted saves,
full disks and non-finite steps (tiny conv autoencoder, single process, CPU)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opensora_ae.config import load_config
from opensora_ae.losses import DiscriminatorLoss, VAELoss
from opensora_ae.models.checkpoint_io import CheckpointError
from opensora_ae.train import checkpoint, run_folder
from opensora_ae.train.loop import OPTIONAL_KEYS, NonFiniteLossError, train
from opensora_ae.train.optim import LinearWarmupLR
from opensora_ae.train.parallel import DistContext
from opensora_ae.write_errors import WriteFailedError

from train_helpers import TinyConvAE, load_safetensors, tiny_config, write_config, write_fixed_clips

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
STATE_FILES = ("optimizer.pt", "lr_scheduler.pt", "scaler.pt", "sampler.pt", "rng/rank0.pt")


def _train(config: Path, *overrides: str) -> Path:
    return train(load_config(config, list(overrides), OPTIONAL_KEYS))


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (hidden ones too) -> content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return write_fixed_clips(tmp_path_factory.mktemp("clips"), count=4, distinct=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, clips) -> tuple[Path, Path]:
    """A config and its finished 2-step run (checkpoint epoch0-global_step2)."""
    root = tmp_path_factory.mktemp("finished")
    config = write_config(root / "cfg.py", tiny_config(clips, max_steps=2, ema_decay=None))
    run_dir = _train(config, "--save-dir", str(root / "run"))
    return config, run_dir


@pytest.fixture
def run_copy(tmp_path, finished_run) -> tuple[Path, Path]:
    config, run_dir = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return config, copy


class Payload:
    """A pickle that creates ``marker`` when unpickled by a loader that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


# ---------------------------------------------------------------------------------------------------------------
# security
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STATE_FILES)
@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_payload_pickle_in_a_state_file_is_refused_and_never_runs(run_copy, tmp_path, name, container):
    config, run_dir = run_copy
    marker = tmp_path / "payload_ran"
    target = run_dir / "epoch0-global_step2" / name
    if container == "torch.save":
        torch.save({"state": Payload(marker)}, target)
    else:
        import pickle

        target.write_bytes(pickle.dumps(Payload(marker)))
    before = _snapshot(run_dir)
    with pytest.raises(CheckpointError) as caught:
        _train(config, "--load", str(run_dir / "epoch0-global_step2"), "--max_steps", "3")
    message = _one_line(caught.value)
    assert str(target) in message and "refused" in message
    assert not marker.exists()
    assert _snapshot(run_dir) == before


def test_truncated_optimizer_file_is_one_line_naming_it(run_copy):
    config, run_dir = run_copy
    target = run_dir / "epoch0-global_step2" / "optimizer.pt"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    before = _snapshot(run_dir)
    with pytest.raises(CheckpointError) as caught:
        _train(config, "--load", str(target.parent), "--max_steps", "3")
    assert f"{target} is truncated" in _one_line(caught.value)
    assert _snapshot(run_dir) == before


def test_checkpoint_state_files_hold_only_tensors_and_plain_values(finished_run):
    _, run_dir = finished_run
    for name in STATE_FILES:
        torch.load(run_dir / "epoch0-global_step2" / name, weights_only=True)  # raises on any other object


def test_rng_states_round_trip_through_weights_only_files(tmp_path):
    import random

    import numpy as np

    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    np.random.standard_normal()  # a cached gaussian in numpy's state
    torch.save(checkpoint._rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    checkpoint._set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


# ---------------------------------------------------------------------------------------------------------------
# a failing --load changes nothing
# ---------------------------------------------------------------------------------------------------------------


def test_load_with_a_missing_file_changes_nothing(run_copy):
    config, run_dir = run_copy
    (run_dir / "epoch0-global_step2" / "scaler.pt").unlink()
    before = _snapshot(run_dir)
    with pytest.raises(FileNotFoundError, match="missing scaler.pt"):
        _train(config, "--load", str(run_dir / "epoch0-global_step2"), "--max_steps", "3")
    assert _snapshot(run_dir) == before
    assert not (run_dir / run_folder.LOCK_NAME).exists()


def test_load_into_a_model_of_another_shape_is_one_line_and_changes_nothing(run_copy):
    config, run_dir = run_copy
    before = _snapshot(run_dir)
    with pytest.raises(CheckpointError) as caught:
        _train(config, "--load", str(run_dir / "epoch0-global_step2"), "--max_steps", "3",
               "--model.width", "6")
    message = _one_line(caught.value)
    assert "model.safetensors does not fit" in message and "size mismatch" in message
    assert _snapshot(run_dir) == before


def test_resuming_a_finished_run_deletes_and_rewrites_no_checkpoint(run_copy):
    config, run_dir = run_copy
    step = run_dir / "epoch0-global_step2"
    before, inode = _snapshot(step), step.stat().st_ino
    _train(config, "--load", str(step))
    assert step.stat().st_ino == inode and _snapshot(step) == before
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["epoch0-global_step2"]


# ---------------------------------------------------------------------------------------------------------------
# a run folder belongs to one run
# ---------------------------------------------------------------------------------------------------------------


def test_new_run_into_a_folder_holding_a_run_stops_and_changes_nothing(run_copy):
    config, run_dir = run_copy
    before = _snapshot(run_dir)
    with pytest.raises(run_folder.RunFolderError) as caught:
        _train(config, "--save-dir", str(run_dir))
    message = _one_line(caught.value)
    assert f"already holds run {run_dir.name}" in message
    assert "pass --load" in message and "--overwrite True to replace it" in message
    assert _snapshot(run_dir) == before


def test_a_folder_with_only_metrics_also_counts_as_a_run(tmp_path, finished_run):
    config, _ = finished_run
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(run_folder.RunFolderError, match="metrics.jsonl"):
        _train(config, "--save-dir", str(tmp_path / "run"))


def test_overwrite_keeps_the_previous_run_until_the_new_one_has_a_checkpoint(run_copy, monkeypatch):
    config, run_dir = run_copy
    old_weights = (run_dir / "epoch0-global_step2" / "model.safetensors").read_bytes()
    seen_during_save = []
    original = checkpoint.save_checkpoint

    def save(*args, **kwargs):
        seen_during_save.append(sorted(p.name for p in run_dir.glob(".replaced-*/epoch*")))
        return original(*args, **kwargs)

    monkeypatch.setattr("opensora_ae.train.loop.save_checkpoint", save)
    _train(config, "--save-dir", str(run_dir), "--overwrite", "True", "--max_steps", "1")
    assert seen_during_save == [["epoch0-global_step2"]]  # the old run still existed while the new one saved
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["epoch0-global_step1"]
    assert not list(run_dir.glob(".replaced-*"))
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "event" not in json.loads(line)] == [1]
    assert old_weights != (run_dir / "epoch0-global_step1" / "model.safetensors").read_bytes()


def test_overwrite_that_fails_before_its_first_checkpoint_keeps_the_previous_run(run_copy, monkeypatch):
    config, run_dir = run_copy
    old = _snapshot(run_dir / "epoch0-global_step2")

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash before the first checkpoint")

    monkeypatch.setattr("opensora_ae.train.loop.save_checkpoint", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(config, "--save-dir", str(run_dir), "--overwrite", "True", "--max_steps", "1")
    (aside,) = run_dir.glob(".replaced-*")
    assert _snapshot(aside / "epoch0-global_step2") == old


def test_a_live_lock_refuses_a_second_process(tmp_path, finished_run):
    config, _ = finished_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = run_dir / run_folder.LOCK_NAME
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid}))
        with pytest.raises(run_folder.RunFolderError) as caught:
            _train(config, "--save-dir", str(run_dir))
        assert f"in use by pid {holder.pid}" in _one_line(caught.value)
        assert json.loads(lock.read_text())["pid"] == holder.pid
        assert sorted(p.name for p in run_dir.iterdir()) == [run_folder.LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_from_another_host_refuses(tmp_path, finished_run):
    config, _ = finished_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / run_folder.LOCK_NAME).write_text(json.dumps({"host": "elsewhere.invalid", "pid": 1}))
    with pytest.raises(run_folder.RunFolderError, match="pid 1 on host elsewhere.invalid"):
        _train(config, "--save-dir", str(run_dir))


def test_a_stale_lock_is_taken_over_with_a_warning_and_released(tmp_path, finished_run, caplog, monkeypatch):
    config, _ = finished_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = run_dir / run_folder.LOCK_NAME
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    held_during_run = []
    original = checkpoint.save_checkpoint

    def save(*args, **kwargs):
        held_during_run.append(json.loads(lock.read_text())["pid"])
        return original(*args, **kwargs)

    monkeypatch.setattr("opensora_ae.train.loop.save_checkpoint", save)
    with caplog.at_level(logging.WARNING, logger="opensora_ae.train.run_folder"):
        _train(config, "--save-dir", str(run_dir), "--max_steps", "1")
    assert f"taking over the lock of pid {dead.pid}" in caplog.text
    assert held_during_run == [os.getpid()]
    assert not lock.exists()
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["epoch0-global_step1"]


# ---------------------------------------------------------------------------------------------------------------
# saves: interrupted at any instant, disk full
# ---------------------------------------------------------------------------------------------------------------


def _trainable(seed: int) -> checkpoint.Trainable:
    torch.manual_seed(seed)
    model = TinyConvAE()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return checkpoint.Trainable("model", model, optimizer, LinearWarmupLR(optimizer),
                                torch.amp.GradScaler("cpu", enabled=False))


def _save(run_dir: Path, seed: int, step: int = 5) -> Path:
    states = checkpoint.RunningStates(epoch=1, global_step=step, extra={"seed": seed})
    return checkpoint.save_checkpoint(run_dir, CPU, [_trainable(seed)], None, None, states)


def _loaded_seed(folder: Path) -> int:
    trainable = _trainable(99)
    states = checkpoint.load_checkpoint(folder, CPU, [trainable], None, None)
    expected = _trainable(states.extra["seed"]).model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in trainable.model.state_dict().items())
    return states.extra["seed"]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not an Exception, so no handler cleans up)."""


@pytest.mark.parametrize("kill_at", range(5))
def test_saving_over_a_step_leaves_a_loadable_checkpoint_after_a_kill_at_any_point(tmp_path, monkeypatch, kill_at):
    final = _save(tmp_path, seed=1)
    calls = {"n": 0}
    real_rename, real_rmtree = Path.rename, shutil.rmtree

    def step(real):
        def wrapped(*args, **kwargs):
            if calls["n"] == kill_at:
                raise Killed
            calls["n"] += 1
            return real(*args, **kwargs)
        return wrapped

    # The save does: rmtree(stale tmp), (writes), rmtree(stale aside), rename final->aside, rename tmp->final,
    # rmtree(aside); kill_at is the index of the step that never happens.
    monkeypatch.setattr(Path, "rename", step(real_rename))
    monkeypatch.setattr(checkpoint.shutil, "rmtree", step(real_rmtree))
    with pytest.raises(Killed):
        _save(tmp_path, seed=2)
    monkeypatch.undo()
    assert _loaded_seed(final) == (2 if kill_at == 4 else 1)
    checkpoint.restore_interrupted_saves(tmp_path)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [final.name]
    assert not (tmp_path / f".{final.name}.old").exists()


def test_saving_over_a_step_without_interruption_replaces_it(tmp_path):
    final = _save(tmp_path, seed=1)
    _save(tmp_path, seed=2)
    assert _loaded_seed(final) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


@pytest.mark.parametrize("failure", ["oserror", "torch_zip_writer"])
def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    previous = _save(tmp_path, seed=1, step=3)
    before = _snapshot(previous)
    real_save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        if Path(path).name == "optimizer.pt":
            if failure == "oserror":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    real_usage = shutil.disk_usage(tmp_path)
    if failure == "torch_zip_writer":  # torch.save gives no errno: the free space tells
        monkeypatch.setattr("opensora_ae.write_errors.shutil.disk_usage",
                            lambda path: type(real_usage)(total=10**9, used=10**9, free=0))
    with pytest.raises(WriteFailedError) as caught:
        _save(tmp_path, seed=2, step=4)
    message = _one_line(caught.value)
    assert str(tmp_path / ".epoch1-global_step4.tmp" / "optimizer.pt") in message
    assert "no space left on device" in message
    assert caught.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == [previous.name]  # temporary folder removed
    assert _snapshot(previous) == before


# ---------------------------------------------------------------------------------------------------------------
# non-finite steps
# ---------------------------------------------------------------------------------------------------------------


def test_ten_nonfinite_steps_save_the_last_good_state_then_stop(tmp_path, clips, monkeypatch):
    config = write_config(tmp_path / "cfg.py", tiny_config(clips, max_steps=30, ema_decay=None))
    good = _train(config, "--save-dir", str(tmp_path / "good"), "--max_steps", "2")
    calls = {"n": 0}
    original = VAELoss.forward

    def nan_after_two(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 2:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(VAELoss, "forward", nan_after_two)
    with pytest.raises(NonFiniteLossError, match="last good state is saved") as caught:
        _train(config, "--save-dir", str(tmp_path / "bad"))
    assert "10 non-finite losses in a row" in _one_line(caught.value)
    (saved,) = checkpoint.list_checkpoints(tmp_path / "bad")
    states = json.loads((saved / "running_states.json").read_text())
    assert states["global_step"] == 2 and states["skipped_steps"] == 10
    expected = load_safetensors(good / "epoch0-global_step2" / "model.safetensors")
    got = load_safetensors(saved / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_nonfinite_discriminator_gradient_is_counted_and_reported(tmp_path, clips, monkeypatch):
    cfg = tiny_config(
        clips, max_steps=3, ema_decay=None,
        discriminator=dict(type="N_Layer_discriminator_3D", input_nc=3, ndf=4, n_layers=2, conv_cls="conv3d"),
        gen_loss_config=dict(gen_start=0, disc_weight=0.5), disc_loss_config=dict(disc_start=0),
    )
    calls = {"n": 0}
    original = DiscriminatorLoss.forward

    def nan_once(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            terms["total"] = terms["total"] * float("inf")
        return terms

    monkeypatch.setattr(DiscriminatorLoss, "forward", nan_once)
    run_dir = _train(write_config(tmp_path / "cfg.py", cfg), "--save-dir", str(tmp_path / "run"))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (skipped,) = [r for r in records if r.get("event") == "skipped_step"]
    assert skipped["part"] == "discriminator" and skipped["step"] == 1
    assert len(skipped["paths"]) == 2 and all(p.endswith(".mp4") for p in skipped["paths"])
    (final,) = checkpoint.list_checkpoints(run_dir)
    states = json.loads((final / "running_states.json").read_text())
    assert states["skipped_steps"] == 1 and states["global_step"] == 3
    steps = [r for r in records if "event" not in r]
    assert [r.get("disc_skipped", 0.0) for r in steps] == [0.0, 1.0, 0.0]
    disc_optim = torch.load(final / "optimizer_discriminator.pt", weights_only=True)
    assert {float(s["step"]) for s in disc_optim["state"].values()} == {2.0}  # the skipped update did not step


def test_a_second_process_is_refused_until_the_first_releases_the_folder(tmp_path, finished_run):
    config, _ = finished_run
    run_dir = tmp_path / "run"
    holder_code = ("import sys; from pathlib import Path; from opensora_ae.train.run_folder import RunFolder; "
                   f"folder = RunFolder(Path({str(run_dir)!r})); folder.acquire(); print('locked', flush=True); "
                   "sys.stdin.readline(); folder.release()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", holder_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run_folder.RunFolderError, match=f"in use by pid {holder.pid} on this host"):
            _train(config, "--save-dir", str(run_dir), "--max_steps", "1")
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    _train(config, "--save-dir", str(run_dir), "--max_steps", "1")
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["epoch0-global_step1"]
