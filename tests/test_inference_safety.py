"""Inference outputs are never lost or read back: a --save-dir inside the input folder, runs that write nothing,
readable-but-short inputs reported apart from unreadable ones, and a full disk (tiny random causal VAE, CPU)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from opensora_ae.inference import reconstruct
from opensora_ae.inference.reconstruct import NoVideoWrittenError, reconstruct_dataset
from opensora_ae.train.parallel import DistContext
from opensora_ae.write_errors import WriteFailedError

from inference_utils import HEIGHT, NUM_FRAMES, WIDTH, run_script, tiny_model_cfg, write_clip, write_config

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _cfg(data: Path, save_dir: Path, **changes) -> dict:
    cfg = dict(dataset=dict(type="video_text", data_path=str(data)), num_frames=NUM_FRAMES,
               resolution=(HEIGHT, WIDTH), dtype="fp32", batch_size=2, save_dir=str(save_dir), crf=0,
               model={**tiny_model_cfg(), "random_init": True})
    cfg.update(changes)
    return cfg


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def data(tmp_path) -> Path:
    for seed, name in enumerate(("a.mp4", "sub/b.mp4")):
        write_clip(tmp_path / "data" / name, 6, 20, 28, seed=seed)
    return tmp_path / "data"


@pytest.mark.parametrize("layout", ["v2", "v1.2"])
def test_save_dir_inside_the_input_folder_is_never_read_back(data, layout):
    save_dir = data / "out"
    first = reconstruct_dataset(_cfg(data, save_dir, layout=layout), CPU)
    assert sorted(first.written) == [str(data / "a.mp4"), str(data / "sub/b.mp4")]
    again = reconstruct_dataset(_cfg(data, save_dir, layout=layout, overwrite=True), CPU)
    assert sorted(again.written) == sorted(first.written) and not again.skipped and not again.too_short
    outputs = ["orig/a_orig.mp4", "orig/sub/b_orig.mp4", "recn/a_recn.mp4", "recn/sub/b_recn.mp4"]
    if layout == "v1.2":
        outputs = ["out_ori/a_ori.mp4", "out_ori/sub/b_ori.mp4", "out_rec/a_rec.mp4", "out_rec/sub/b_rec.mp4"]
        assert [f for f in _files(data) if f.startswith("out")] == outputs
    else:
        assert _files(save_dir) == outputs


def test_short_readable_inputs_are_reported_apart_and_a_run_writing_nothing_fails(tmp_path, monkeypatch, capsys):
    for seed, name in enumerate(("a.mp4", "b.mp4", "c.mp4")):
        write_clip(tmp_path / "data" / name, 3, 20, 28, seed=seed)  # readable, but a 5-frame clip is asked
    with pytest.raises(NoVideoWrittenError, match="3 too short or too small for the requested clip, 0 unreadable"):
        reconstruct_dataset(_cfg(tmp_path / "data", tmp_path / "lib_out"), CPU)
    capsys.readouterr()
    config = write_config(tmp_path / "cfg.py", {**tiny_model_cfg(), "random_init": True}, tmp_path / "data")
    with pytest.raises(SystemExit) as exit_info:
        run_script("inference.py", [str(config), "--save-dir", str(tmp_path / "out")], monkeypatch)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith(f"error: no video written into {tmp_path / 'out'}")
    assert "3 too short or too small for the requested clip, 0 unreadable" in error
    assert "skipped 3 inputs too short or too small for the requested clip:" in captured.out
    assert "unreadable" not in captured.out
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        assert f"{tmp_path / 'data' / name}: video {tmp_path / 'data' / name} is too short" in captured.out


def test_a_run_whose_outputs_all_exist_succeeds(data, tmp_path):
    reconstruct_dataset(_cfg(data, tmp_path / "out"), CPU)
    report = reconstruct_dataset(_cfg(data, tmp_path / "out"), CPU)
    assert not report.written and len(report.existing) == 2


def test_disk_full_while_writing_an_output_is_one_line_and_keeps_earlier_outputs(data, tmp_path, monkeypatch,
                                                                                  capsys):
    save_dir = tmp_path / "out"
    reconstruct_dataset(_cfg(data, save_dir), CPU)
    before = {name: (save_dir / name).read_bytes() for name in _files(save_dir)}
    real_write = reconstruct.write_video

    def full_disk(path, *args, **kwargs):
        if Path(path).name.startswith(".b_recn"):
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(reconstruct, "write_video", full_disk)
    with pytest.raises(WriteFailedError) as caught:
        reconstruct_dataset(_cfg(data, save_dir, overwrite=True), CPU)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{save_dir / 'recn/sub/b_recn.mp4'}: no space left on device")
    assert _files(save_dir) == sorted(before)  # no temporary file left
    assert (save_dir / "recn/sub/b_recn.mp4").read_bytes() == before["recn/sub/b_recn.mp4"]
    # The script: that line on stderr, status 2, no traceback.
    config = write_config(tmp_path / "cfg.py", {**tiny_model_cfg(), "random_init": True}, data)
    with pytest.raises(SystemExit) as exit_info:
        run_script("inference.py", [str(config), "--save-dir", str(save_dir), "--overwrite", "True"], monkeypatch)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    expected = f"error: {save_dir / 'recn/sub/b_recn.mp4'}: no space left on device"
    assert err.strip().splitlines()[-1].startswith(expected)
