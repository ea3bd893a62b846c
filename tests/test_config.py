import textwrap

import pytest

from opensora_ae.config import ConfigError, load_config, parse_args, parse_overrides, save_config


@pytest.fixture()
def config_dir(tmp_path):
    (tmp_path / "base.py").write_text(
        textwrap.dedent(
            """
            model = dict(type="dc_ae", from_pretrained=None, use_spatial_tiling=False)
            dataset = dict(type="video_text", data_path="a.csv")
            grad_checkpoint = False
            lr = 1e-4
            bucket_config = None
            save_dir = "outputs"
            """
        )
    )
    (tmp_path / "child.py").write_text(
        textwrap.dedent(
            """
            _base_ = ["base.py"]
            model = dict(from_pretrained="ckpt.safetensors", disc_off_grad_ckpt=True)
            grad_checkpoint = True
            discriminator = dict(type="N_Layer_discriminator_3D", n_layers=5)
            """
        )
    )
    return tmp_path


def test_parse_literals_and_forms():
    parsed = parse_overrides(
        ["--lr", "3e-4", "--wandb", "True", "--model.x=None", "--sizes", "(1, 2)", "--name", "run-a", "--flag"]
    )
    assert parsed == [("lr", 3e-4), ("wandb", True), ("model.x", None), ("sizes", (1, 2)), ("name", "run-a"), ("flag", True)]


def test_base_inheritance_merges_dicts(config_dir):
    cfg = load_config(config_dir / "child.py")
    assert cfg.model.type == "dc_ae"
    assert cfg.model.from_pretrained == "ckpt.safetensors"
    assert cfg.model.disc_off_grad_ckpt is True
    assert cfg.model.use_spatial_tiling is False
    assert cfg.grad_checkpoint is True
    assert cfg.discriminator.n_layers == 5
    assert cfg.config_name == "child"


def test_dotted_overrides(config_dir):
    cfg = load_config(
        config_dir / "child.py",
        [
            "--model.from_pretrained", "/w/x.pt",
            "--dataset.data_path=/data/videos",
            "--bucket_config", "{'256px_ar1:1': {32: (1.0, 1)}}",
            "--save-dir", "D",
            "--model.new_key", "[1, 2]",
        ],
    )
    assert cfg.model.from_pretrained == "/w/x.pt"
    assert cfg.dataset.data_path == "/data/videos"
    assert cfg.bucket_config == {"256px_ar1:1": {32: (1.0, 1)}}
    assert cfg.save_dir == "D"
    assert cfg.model.new_key == [1, 2]


def test_unknown_top_level_key_suggests(config_dir):
    with pytest.raises(ConfigError, match=r"did you mean --model\.from_pretrained\?"):
        load_config(config_dir / "base.py", ["--modle.from_pretrained", "x"])


def test_extra_keys_allowed_and_nested_only_under_dicts(config_dir):
    cfg = load_config(config_dir / "base.py", ["--load", "ckpt_dir"], extra_keys=["load"])
    assert cfg.load == "ckpt_dir"
    with pytest.raises(ConfigError, match="lr is float"):
        load_config(config_dir / "base.py", ["--lr.x", "1"])


def test_parse_args_requires_config(config_dir):
    with pytest.raises(ConfigError, match="first argument must be a config"):
        parse_args(["--lr", "1"])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_args([str(config_dir / "missing.py")])


def test_save_config_roundtrip(config_dir, tmp_path):
    cfg = load_config(config_dir / "child.py", ["--lr", "0.5"])
    saved = save_config(cfg, tmp_path / "run")
    again = load_config(saved)
    assert again.lr == 0.5 and again.model.from_pretrained == "ckpt.safetensors"
