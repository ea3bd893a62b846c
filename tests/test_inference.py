"""Reconstruction runner and scripts/vae/{inference,compare}.py end to end, with tiny random-weight models."""

from __future__ import annotations

import inspect
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from opensora_ae.config import load_config
from opensora_ae.data.datasets import VideoTextDataset
from opensora_ae.data.transforms import to_uint8_frames
from opensora_ae.data.video_io import probe, read_video, write_video
from opensora_ae.inference.compare import HEADER_HEIGHT
from opensora_ae.inference.reconstruct import output_path, reconstruct_dataset
from opensora_ae.inference.runner import (build_inference_dataset, build_inference_model, iter_clips, output_names,
                                         snap_to_uint8_grid)
from opensora_ae.models import build_model, resolve_model_class
from opensora_ae.train.parallel import DistContext
from inference_utils import (GOOD_VIDEOS, HEIGHT, NOT_A_VIDEO, NUM_FRAMES, PYTHON, REPO, TOO_SHORT, WIDTH,
                             load_tiny_model, make_video_folder, run_command, run_script, tiny_model_cfg, write_clip,
                             write_config, write_tiny_weights)
from parity_utils import model_config

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
NAMES = sorted(name[: -len(".mp4")] for name in GOOD_VIDEOS)  # "clip", "sub/a", "sub/deep/b"
INFERENCE_CONFIGS = sorted((REPO / "configs/vae/inference").glob("*.py"))
SCRIPT_KEYS = runpy.run_path(str(REPO / "scripts/vae/inference.py"))["SCRIPT_KEYS"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inference")
    weights = write_tiny_weights(root / "tiny_causal_vae.safetensors")
    data = make_video_folder(root / "data")
    model = {**tiny_model_cfg(), "from_pretrained": str(weights)}
    config = write_config(root / "tiny.py", model, data, save_dir=None)
    return {"root": root, "weights": weights, "data": data, "config": config}


@pytest.fixture(scope="module")
def v2_run(workspace) -> dict:
    """One real command-line run: lossless, latents saved, batches of 2, a folder with sub-folders."""
    save_dir = workspace["root"] / "out"
    result = run_command([PYTHON, str(REPO / "scripts/vae/inference.py"), str(workspace["config"]),
                          "--save-dir", str(save_dir), "--crf", "0", "--save-latents"], cwd=workspace["root"])
    return {"save_dir": save_dir, "stdout": result.stdout}


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def config_dict(workspace: dict[str, Path], **changes) -> dict:
    cfg = dict(dataset=dict(type="video_text", data_path=str(workspace["data"])), num_frames=NUM_FRAMES,
               resolution=(HEIGHT, WIDTH), dtype="fp32", batch_size=2,
               model={**tiny_model_cfg(), "from_pretrained": str(workspace["weights"])})
    cfg.update(changes)
    return cfg


def test_v2_layout_keeps_sub_folders_and_lists_unreadable_inputs(v2_run, workspace):
    save_dir = v2_run["save_dir"]
    assert files_under(save_dir / "orig") == [f"{name}_orig.mp4" for name in NAMES]
    assert files_under(save_dir / "recn") == [f"{name}_recn.mp4" for name in NAMES]
    assert files_under(save_dir / "latents") == [f"{name}.safetensors" for name in NAMES]
    assert sorted(path.name for path in save_dir.iterdir()) == ["latents", "orig", "recn"]  # no spatial, no temp
    stdout = v2_run["stdout"]
    assert "reconstructed 3 videos" in stdout
    too_short, unreadable = stdout.split("skipped 1 inputs too short or too small for the requested clip:")[1].split(
        "skipped 1 unreadable inputs:")
    assert str(workspace["data"] / TOO_SHORT) in too_short and str(workspace["data"] / NOT_A_VIDEO) in unreadable


def test_orig_is_the_preprocessed_clip_and_sizes_match(v2_run, workspace):
    dataset = build_inference_dataset(config_dict(workspace))
    clips = {clip.name: clip for clip in iter_clips(dataset, CPU, [])}
    assert sorted(clips) == NAMES
    for name, clip in clips.items():
        orig = read_video(v2_run["save_dir"] / "orig" / f"{name}_orig.mp4")
        recn = read_video(v2_run["save_dir"] / "recn" / f"{name}_recn.mp4")
        assert orig.shape == recn.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(orig, to_uint8_frames(clip.video))  # crf 0: exact
        # What the model saw is orig itself: the clip is on the uint8 grid.
        torch.testing.assert_close(clip.video, torch.from_numpy(orig).permute(3, 0, 1, 2).float() / 127.5 - 1,
                                   rtol=0, atol=1e-6)
        assert probe(v2_run["save_dir"] / "recn" / f"{name}_recn.mp4").fps == pytest.approx(12.0)


def test_saved_latents_decode_to_the_written_reconstruction(v2_run, workspace):
    model = load_tiny_model(workspace["weights"])
    for name in NAMES:
        with safe_open(str(v2_run["save_dir"] / "latents" / f"{name}.safetensors"), "pt") as handle:
            latent, meta = handle.get_tensor("latent"), handle.metadata()
        assert (int(meta["num_frames"]), int(meta["height"]), int(meta["width"])) == (NUM_FRAMES, HEIGHT, WIDTH)
        assert meta["source"] == str(workspace["data"] / f"{name}.mp4")
        assert latent.shape == (4, 2, HEIGHT // 8, WIDTH // 8)
        if name == NAMES[0]:  # the latent is the encoding of orig (checked once: encoding is the slow half)
            orig = read_video(v2_run["save_dir"] / "orig" / f"{name}_orig.mp4")
            x = torch.from_numpy(orig).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
            with torch.no_grad():
                torch.testing.assert_close(model.encode(x)[0], latent, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            decoded = to_uint8_frames(model.decode(latent[None], num_frames=int(meta["num_frames"]))[0])
        recn = read_video(v2_run["save_dir"] / "recn" / f"{name}_recn.mp4")
        assert np.abs(decoded.astype(int) - recn.astype(int)).max() <= 1  # rounding of float noise only


def test_v1_2_layout_writes_sibling_folders_at_high_quality(tmp_path, workspace):
    source = tmp_path / "data/smooth.mp4"
    write_clip(source, 6, 24, 32, noise=0)
    save_dir = tmp_path / "D"
    cfg = config_dict(workspace, save_dir=str(save_dir), layout="v1.2",
                      dataset=dict(type="video_text", data_path=str(source)))
    assert reconstruct_dataset(cfg, CPU).written == [str(source)]
    assert not save_dir.exists()
    assert files_under(tmp_path / "D_ori") == ["smooth_ori.mp4"]
    assert files_under(tmp_path / "D_rec") == ["smooth_rec.mp4"]
    # Default crf 10 (yuv420p): not exact, but close on smooth content.
    clip = next(iter_clips(build_inference_dataset(cfg), CPU, []))
    written = read_video(tmp_path / "D_ori/smooth_ori.mp4")
    mse = np.mean((written / 255.0 - to_uint8_frames(clip.video) / 255.0) ** 2)
    assert 10 * np.log10(1 / mse) > 30  # chroma subsampling dominates at 16x24


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, workspace):
    cfg = config_dict(workspace, save_dir=str(tmp_path / "out"), crf=0,
                      dataset=dict(type="video_text", data_path=str(workspace["data"] / "sub/a.mp4")))
    source = str(workspace["data"] / "sub/a.mp4")
    recn_path = tmp_path / "out/recn/a_recn.mp4"
    assert reconstruct_dataset(cfg, CPU).written == [source]
    first = read_video(recn_path)
    write_video(recn_path, np.zeros_like(first), 12.0, lossless=True)  # stands for an earlier run's output
    report = reconstruct_dataset(cfg, CPU)
    assert (report.written, report.existing) == ([], [source])
    assert read_video(recn_path).max() == 0
    # Asking for latents that the earlier run did not write redoes the clip.
    assert reconstruct_dataset({**cfg, "save_latents": True}, CPU).written == [source]
    assert reconstruct_dataset({**cfg, "overwrite": True}, CPU).written == [source]
    np.testing.assert_array_equal(read_video(recn_path), first)
    assert not [path for path in (tmp_path / "out").rglob(".*")]  # no temporary files left


def test_missing_weights_is_a_one_line_error(workspace, monkeypatch, capsys):
    with pytest.raises(ValueError, match="no weights given"):
        build_inference_model(tiny_model_cfg(), CPU.device, torch.float32)
    model = build_inference_model({**tiny_model_cfg(), "random_init": True}, CPU.device, torch.float32)
    assert not model.training
    config = write_config(workspace["root"] / "no_weights.py", tiny_model_cfg(), workspace["data"])
    with pytest.raises(SystemExit) as exit_info:
        run_script("inference.py", [str(config), "--save-dir", str(workspace["root"] / "unused")], monkeypatch)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no weights given: set --model.from_pretrained")
    assert not (workspace["root"] / "unused").exists()


def test_unknown_layout_and_missing_save_dir_are_errors(workspace, monkeypatch, capsys):
    config = str(workspace["config"])
    for argv, message in (([config], "error: inference needs an output folder"),
                          ([config, "--save-dir", "x", "--layout", "v3"], "error: --layout 'v3' is unknown"),
                          ([config, "--save-dir", "x", "--crf", "60"], "error: --crf 60 is out of range")):
        with pytest.raises(SystemExit):
            run_script("inference.py", argv, monkeypatch)
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(message)


@pytest.mark.slow
def test_torchrun_splits_the_data_across_two_ranks(tmp_path, workspace):
    save_dir = tmp_path / "out"
    result = run_command([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(REPO / "scripts/vae/inference.py"), str(workspace["config"]),
                          "--save-dir", str(save_dir), "--device", "cpu", "--batch_size", "1"], cwd=tmp_path)
    # Each input is written once (a rank doing everything would make it 6) and every skip is listed once.
    assert "reconstructed 3 videos" in result.stdout
    assert "skipped 1 inputs too short or too small" in result.stdout and "skipped 1 unreadable inputs" in result.stdout
    assert files_under(save_dir / "recn") == [f"{name}_recn.mp4" for name in NAMES]
    assert files_under(save_dir / "orig") == [f"{name}_orig.mp4" for name in NAMES]


@pytest.mark.slow
def test_opensora_v1_2_writes_the_spatial_vae_reconstruction(tmp_path):
    write_clip(tmp_path / "data/clip.mp4", 6, 20, 28)
    model_cfg = model_config("opensora1_2_vae")
    cfg = dict(dataset=dict(type="video_text", data_path=str(tmp_path / "data")), num_frames=NUM_FRAMES,
               resolution=(HEIGHT, WIDTH), model=model_cfg, crf=0)
    reconstruct_dataset({**cfg, "save_dir": str(tmp_path / "D")}, CPU)
    assert files_under(tmp_path / "D") == ["orig/clip_orig.mp4", "recn/clip_recn.mp4", "spatial/clip_spatial.mp4"]
    assert output_path(tmp_path / "E", "v1.2", "spatial", "clip") == tmp_path / "E_spatial/clip_spatial.mp4"
    model = build_model(model_cfg).eval()
    orig = read_video(tmp_path / "D/orig/clip_orig.mp4")
    x = torch.from_numpy(orig).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    with torch.no_grad():
        spatial_only = to_uint8_frames(model.decode_spatial(model.encode_spatial(x))[0])
    written = read_video(tmp_path / "D/spatial/clip_spatial.mp4")
    assert written.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(spatial_only.astype(int) - written.astype(int)).max() <= 1


def test_csv_outside_the_data_keeps_sub_folders_and_skips_name_collisions(workspace, tmp_path):
    data = workspace["data"]
    rows = [data / "clip.mp4", data / "sub/deep/b.mp4", data / "sub/a.mp4", data / "sub/../sub/a.mp4"]
    (tmp_path / "list.csv").write_text("path\n" + "".join(f"{row}\n" for row in rows))
    dataset = build_inference_dataset(config_dict(workspace, dataset=dict(data_path=str(tmp_path / "list.csv"))))
    assert output_names(dataset) == ["clip", "sub/deep/b", "sub/a", "sub/a"]
    skipped = []
    assert [clip.name for clip in iter_clips(dataset, CPU, skipped)] == ["clip", "sub/deep/b", "sub/a"]
    assert skipped == [(str(data / "sub/a.mp4"), f"same output name 'sub/a' as {data / 'sub/a.mp4'}; rename one of them")]


def test_snap_to_uint8_grid_round_trips_through_uint8():
    video = torch.rand(3, 2, 4, 5) * 2.2 - 1.1
    snapped = snap_to_uint8_grid(video)
    back = torch.from_numpy(to_uint8_frames(snapped)).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert torch.equal(back, snapped)
    assert (snapped - video.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6


def test_compare_script_pairs_by_relative_path(tmp_path, capsys):
    real_dir, generated_dir, save_dir = tmp_path / "orig", tmp_path / "recn", tmp_path / "cmp"
    rng = np.random.default_rng(0)
    pairs = {}
    for key in ("x", "sub/y"):
        real = write_clip(real_dir / f"{key}_orig.mp4", 6, 16, 20, seed=len(pairs))
        noisy = np.clip(real.astype(int) + rng.integers(-6, 7, size=real.shape), 0, 255).astype(np.uint8)
        write_video(generated_dir / f"{key}_recn.mp4", noisy, 12.0, lossless=True)
        pairs[key] = (real, noisy)
    write_clip(real_dir / "lonely_orig.mp4", 4, 16, 20)
    write_clip(generated_dir / "sub/extra_recn.mp4", 4, 16, 20)
    write_clip(real_dir / "z_orig.mp4", 4, 16, 20)
    write_clip(generated_dir / "z_recn.mp4", 4, 8, 20)  # size mismatch: reported, not compared

    main = runpy.run_path(str(REPO / "scripts/vae/compare.py"))["main"]
    code = main(["--real_video_dir", str(real_dir), "--generated_video_dir", str(generated_dir),
                 "--save-dir", str(save_dir), "--num_rows", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert files_under(save_dir) == ["compare.json", "sub/y_compare.mp4", "sub/y_compare.png", "x_compare.mp4",
                                     "x_compare.png"]
    report = json.loads((save_dir / "compare.json").read_text())
    assert report["only_real"] == [str(real_dir / "lonely_orig.mp4")]
    assert report["only_generated"] == [str(generated_dir / "sub/extra_recn.mp4")]
    assert "frame sizes differ" in report["failed"]["z"]
    for item in report["compared"]:
        real, noisy = pairs[item["name"]]
        mse = ((real / 255.0 - noisy / 255.0) ** 2).reshape(len(real), -1).mean(axis=1)
        assert item["psnr"] == pytest.approx(float(np.mean(10 * np.log10(1 / mse))), abs=1e-3)
        assert f"{item['name']}: PSNR {item['psnr']:.2f} dB" in out
        # 16-row clips are enlarged 8x (to 128 rows) under the label strip
        assert np.asarray(Image.open(item["png"])).shape == (3 * (HEADER_HEIGHT + 128), 8 * 3 * 20, 3)
        assert read_video(item["mp4"]).shape == (6, HEADER_HEIGHT + 128, 8 * 60, 3)
    assert "skipped (no generated video)" in out and "skipped z: frame sizes differ" in out


def test_every_model_family_has_an_inference_config():
    assert [path.stem for path in INFERENCE_CONFIGS] == [
        "causal_vae", "demo_dc_ae", "demo_video_dc_ae", "hunyuanvideo_vae", "opensora_v1_2", "video_dc_ae"]


@pytest.mark.parametrize("path", INFERENCE_CONFIGS, ids=lambda path: path.stem)
def test_inference_config_keys_are_real_arguments(path):
    cfg = load_config(path).to_dict()
    top_level = set(cfg) - {"config_path", "config_name"}
    assert top_level <= set(SCRIPT_KEYS) | {"dataset", "model"}, top_level - set(SCRIPT_KEYS)
    assert set(cfg["dataset"]) - {"type"} <= set(inspect.signature(VideoTextDataset).parameters)
    model_cfg = dict(cfg["model"])
    assert model_cfg.pop("from_pretrained") is None  # weights are given on the command line
    cls = resolve_model_class(model_cfg)
    assert set(model_cfg) - {"type"} <= set(cls.config_keys())
    with torch.device("meta"):  # the constructor accepts the values too, without allocating the full model
        model = cls(**{key: value for key, value in model_cfg.items() if key != "type"})
    latent = model.get_latent_size(cfg["num_frames"], *cfg["resolution"])
    assert (latent[0] - 1) * model.compression[0] + 1 <= cfg["num_frames"] and min(latent) >= 1


def test_demo_inference_config_matches_the_demo_training_model(tmp_path):
    train_cfg = load_config(REPO / "configs/vae/train/demo_dc_ae.py").to_dict()
    cfg = load_config(REPO / "configs/vae/inference/demo_dc_ae.py").to_dict()
    assert cfg["model"] == train_cfg["model"]
    assert (cfg["num_frames"], tuple(cfg["resolution"])) == (train_cfg["dataset"]["num_frames"],
                                                             tuple(train_cfg["dataset"]["image_size"]))
    write_clip(tmp_path / "heldout/clip.mp4", 10, 40, 48)
    cfg.update(dataset={**cfg["dataset"], "data_path": str(tmp_path / "heldout")},
               model={**cfg["model"], "random_init": True})
    recn = {}
    for dtype in ("fp32", "bf16"):  # bf16: weights and inputs in bf16, as Open-Sora runs its autoencoders
        torch.manual_seed(0)  # the same random weights for both
        assert len(reconstruct_dataset({**cfg, "dtype": dtype, "save_dir": str(tmp_path / dtype)}, CPU).written) == 1
        recn[dtype] = read_video(tmp_path / dtype / "recn/clip_recn.mp4").astype(float)
    assert recn["fp32"].shape == (8, 32, 32, 3)
    assert np.abs(recn["fp32"] - recn["bf16"]).mean() < 2
