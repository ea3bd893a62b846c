"""Command lines of every script: --help without side effects, --print-config, the original projects' flags,
one-line errors (train included, under torchrun too), the LPIPS fail-early check and the opensora-ae command."""

from __future__ import annotations

import errno
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from opensora_ae import cli
from opensora_ae.command import INFERENCE_ALIASES, TRAIN_ALIASES, Command, load_command_config, split_debug
from opensora_ae.config import CONFIGS_DIR, ConfigError
from opensora_ae.models import build_model
from opensora_ae.models.checkpoint_io import CheckpointError
from opensora_ae.train import loop
from train_helpers import tiny_config, write_config

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("train", "inference", "eval", "stats", "compare", "demo")
TRAIN = Command("train", "usage: train", "train", loop.OPTIONAL_KEYS, TRAIN_ALIASES)
INFERENCE = Command("inference", "usage: inference", "inference", ("save_dir", "num_frames"), INFERENCE_ALIASES)


def run_main(script: str, argv: list[str], monkeypatch) -> int:
    """``scripts/vae/<script>.py ARGV`` in this process; returns its exit status."""
    monkeypatch.setattr(sys, "argv", [script, *argv])
    try:
        runpy.run_path(str(REPO / "scripts/vae" / f"{script}.py"), run_name="__main__")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def run_subprocess(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {key: value for key, value in os.environ.items() if key != "OPENSORA_AE_DEBUG"}
    full_env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_runs_nothing(script, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(script, [flag], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "usage" in out.lower() and "--" in out
    assert list(tmp_path.iterdir()) == []  # nothing written (demo used to cut sample clips)


@pytest.mark.parametrize("script, config", [("train", "video_dc_ae"), ("inference", "causal_vae"),
                                            ("stats", "hunyuanvideo_vae")])
def test_help_with_a_config_lists_its_keys_and_values(script, config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(script, [config, "--help"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "--print-config" in out and "--data-path" in out
    keys = out.split("keys of ", 1)[1]
    assert "  dtype = 'bf16'" in keys and "  model = {'type': " in keys
    assert list(tmp_path.iterdir()) == []


def test_print_config_prints_the_resolved_config_and_exits(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["video_dc_ae", "--print-config", "--max_steps", "1e3", "--wandb", "false", "--save-dir", "2024"]
    assert run_main("train", argv, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "max_steps = 1000\n" in out and "wandb = False\n" in out and "save_dir = '2024'\n" in out
    assert list(tmp_path.iterdir()) == []


def test_original_projects_flags_map_to_our_keys(tmp_path):
    cfg = load_command_config(TRAIN, ["causal_vae", "--data-path", "a.csv", "--ckpt-path", "w.pt",
                                      "--resume_from_checkpoint", "run/epoch0-global_step5", "--enable_tiling",
                                      "--lr", "3e-4", "--resolution", "128", "--num_frames", "9",
                                      "--sample_rate", "2"])
    assert cfg.dataset.data_path == "a.csv" and cfg.model.from_pretrained == "w.pt"
    assert cfg.load == "run/epoch0-global_step5" and cfg.optim.lr == 3e-4
    assert cfg.model.use_spatial_tiling is True and cfg.model.use_temporal_tiling is True
    assert (cfg.dataset.image_size, cfg.dataset.num_frames, cfg.dataset.sample_rate) == (128, 9, 2)
    for flag in ("--pretrained_model_name_or_path", "--ae_path", "--ckpt", "--model_path"):
        assert load_command_config(INFERENCE, ["causal_vae", flag, "folder/vae"]).model.from_pretrained == "folder/vae"
    cfg = load_command_config(INFERENCE, ["causal_vae", "--video_path", "clip.mp4", "--save_dir", "out",
                                          "--num_frames", "33"])
    assert (cfg.dataset.data_path, cfg.save_dir, cfg.num_frames) == ("clip.mp4", "out", 33)  # script keys win


def test_original_projects_flags_without_an_automatic_equivalent_name_it():
    with pytest.raises(ConfigError, match=r"--rec_path \(Open-Sora-Plan\): outputs go to a folder: use --save-dir"):
        load_command_config(INFERENCE, ["causal_vae", "--rec_path", "rec.mp4"])
    with pytest.raises(ConfigError, match=r"--output_origin .*always written"):
        load_command_config(INFERENCE, ["causal_vae", "--output_origin"])
    with pytest.raises(ConfigError, match=r"--resolution .*bucket_config"):
        load_command_config(TRAIN, ["video_dc_ae", "--resolution", "256"])


def test_model_config_json_builds_the_causal_vae_from_that_file(tmp_path):
    fields = json.loads((CONFIGS_DIR / "vae/causal_vae/v1_1.json").read_text())
    fields.update(hidden_size=32, hidden_size_mult=[1, 1, 1, 1], num_res_blocks=1, _name_or_path="LanguageBind/x")
    (tmp_path / "config.json").write_text(json.dumps(fields))
    cfg = load_command_config(TRAIN, ["causal_vae", "--model_config", str(tmp_path / "config.json"),
                                      "--model.num_res_blocks", "2"])
    assert cfg.model.decoder_attention == "AttnBlock3DFix"  # v1_1.json, not the shipped release architecture
    assert cfg.model.hidden_size == 32 and cfg.model.num_res_blocks == 2  # the command line wins over the file
    assert "_name_or_path" not in cfg.model
    model = build_model(cfg.model)
    assert model.encoder.conv_in.out_channels == 32
    with pytest.raises(ConfigError, match="--model_config missing.json: no such file"):
        load_command_config(TRAIN, ["causal_vae", "--model_config", "missing.json"])


@pytest.mark.slow  # a subprocess: python + torch start-up
def test_train_user_errors_are_one_line_with_traceback_on_debug(tmp_path, monkeypatch):
    argv = ["video_dc_ae", "--model.latent_chanels", "4"]
    result = run_subprocess([sys.executable, str(REPO / "scripts/vae/train.py"), *argv], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown config key --model.latent_chanels; did you mean --model.latent_channels?"]
    with pytest.raises(ConfigError, match="latent_chanels"):  # re-raised: Python prints the traceback
        run_main("train", [*argv, "--debug", "True"], monkeypatch)
    monkeypatch.setenv("OPENSORA_AE_DEBUG", "1")
    with pytest.raises(ConfigError, match="latent_chanels"):
        run_main("train", argv, monkeypatch)


@pytest.mark.parametrize("error", [
    ValueError("dataset.data_path 'x.csv' does not exist"),
    FileNotFoundError("weights.safetensors: no such file"),
    OSError(errno.ENOSPC, "No space left on device", "run/epoch0-global_step4"),
    CheckpointError("run/epoch0-global_step4/optimizer.pt is truncated"),
    ConfigError("--max_steps: expected an int"),
    loop.NonFiniteLossError("10 non-finite losses in a row (last batch: a.mp4); lower optim.lr"),
])
def test_errors_from_the_training_loop_are_one_line(error, tmp_path, monkeypatch, capsys):
    def failing_train(cfg):
        raise error

    monkeypatch.setattr(loop, "train", failing_train)
    config = tmp_path / "tiny.py"
    config.write_text("model = dict(type='dc_ae')\nvae_loss_config = dict(perceptual_loss_weight=0)\n")
    assert run_main("train", [str(config)], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(error.args[-1]) in err[0]


def test_a_real_training_run_with_missing_data_is_one_line(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "tiny.py", tiny_config(tmp_path / "clips", max_steps=1))
    missing = tmp_path / "missing.csv"
    argv = [str(config), "--save-dir", str(tmp_path / "run"), "--dataset.data_path", str(missing)]
    assert run_main("train", argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(missing) in err[0]  # the wording is the dataset's


def test_missing_lpips_backbone_fails_before_building_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    built = []
    monkeypatch.setattr(loop, "train", lambda cfg: built.append(cfg))
    assert run_main("train", ["causal_vae", "--save-dir", str(tmp_path / "run")], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = tmp_path / "torch_home/hub/checkpoints/vgg16-397923af.pth"
    assert len(err) == 1 and str(expected) in err[0] and "put torchvision's vgg16-397923af.pth there" in err[0]
    assert "--vae_loss_config.perceptual_loss_weight 0" in err[0]
    assert built == [] and not (tmp_path / "run").exists()
    assert run_main("train", ["causal_vae", "--vae_loss_config.perceptual_loss_weight", "0"], monkeypatch) == 0
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"")
    assert run_main("train", ["causal_vae"], monkeypatch) == 0
    assert len(built) == 2


@pytest.mark.slow
def test_torchrun_config_error_is_one_line_not_rank_tracebacks(tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(REPO / "scripts/vae/train.py"), "video_dc_ae", "--dataset.num_frame", "3"]
    result = run_subprocess(args, tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: unknown config key --dataset.num_frame; did you mean --dataset.num_frames?"]
    assert "scripts/vae/train.py\", line" not in result.stderr  # no rank traceback


def test_console_command_dispatches_to_the_scripts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in SCRIPTS)
    assert cli.main(["trian"]) == 2
    assert "did you mean train?" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["opensora-ae"])
    assert cli.main(["train", "video_dc_ae", "--print-config", "--max_steps", "7"]) == 0
    assert "max_steps = 7\n" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["stats", "video_dc_ae", "--batch_size", "abc"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --batch_size: expected an int, got 'abc'"


def test_debug_flag_is_taken_out_of_the_overrides():
    assert split_debug(["cfg.py", "--debug", "True", "--max_steps", "1"]) == (["cfg.py", "--max_steps", "1"], True)
    assert split_debug(["cfg.py", "--debug"]) == (["cfg.py"], True)
    assert split_debug(["--debug=FALSE", "cfg.py"]) == (["cfg.py"], False)
    assert split_debug(["cfg.py", "--debug", "--max_steps", "2"]) == (["cfg.py", "--max_steps", "2"], True)


def test_compare_errors_are_one_line(tmp_path, monkeypatch, capsys):
    argv = ["--real_video_dir", str(tmp_path / "none"), "--generated_video_dir", str(tmp_path), "--save-dir",
            str(tmp_path / "cmp")]
    assert run_main("compare", argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(tmp_path / "none") in err[0]
    assert run_main("compare", [*argv, "--debug", "maybe"], monkeypatch) == 2  # argparse's usage error
    assert "argument --debug: invalid parse_bool value: 'maybe'" in capsys.readouterr().err
