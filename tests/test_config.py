import textwrap

import pytest

from opensora_ae.config import (CONFIGS_DIR, ConfigError, Override, load_config, parse_args, parse_overrides,
                                resolve_config_path, save_config)


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
    assert [(o.key, o.value) for o in parsed] == [
        ("lr", 3e-4), ("wandb", True), ("model.x", None), ("sizes", (1, 2)), ("name", "run-a"), ("flag", True)]
    assert parsed[0] == Override("lr", "3e-4") and parsed[-1] == Override("flag", None)


LITERALS = [("false", False), ("False", False), ("FALSE", False), ("true", True), ("True", True), ("none", None),
            ("None", None), ("NULL", None), ("null", None)]


@pytest.mark.parametrize("text, value", LITERALS)
def test_literal_words_in_any_case(config_dir, text, value):
    cfg = load_config(config_dir / "base.py", ["--grad_checkpoint", text, "--model.from_pretrained", text,
                                               "--wandb", text], extra_keys=["wandb"])
    assert cfg.wandb is value and cfg.model.from_pretrained is value
    if value is not None:
        assert cfg.grad_checkpoint is value


def test_values_are_checked_against_the_key_type(config_dir):
    cfg = load_config(config_dir / "base.py", ["--max_steps", "1e3", "--save-dir", "2024", "--lr", "1",
                                               "--dataset.data_path", "007"], extra_keys=["max_steps"])
    assert cfg.max_steps == 1000 and type(cfg.max_steps) is int
    assert cfg.save_dir == "2024" and cfg.dataset.data_path == "007"
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    for argv, message in ((["--max_steps", "abc"], "--max_steps: expected an int, got 'abc'"),
                          (["--max_steps", "1.5"], "--max_steps: expected an int, got '1.5'"),
                          (["--grad_checkpoint", "1"], "--grad_checkpoint: expected true or false"),
                          (["--lr", "fast"], "--lr: expected a number"),
                          (["--model", "dc_ae"], "--model: expected a dict"),
                          (["--save-dir"], "--save_dir: expected a string")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
            load_config(config_dir / "base.py", argv, extra_keys=["max_steps"])


def test_unknown_component_key_suggests_the_class_parameter(config_dir):
    with pytest.raises(ConfigError, match=r"did you mean --model\.latent_channels\?"):
        load_config(config_dir / "base.py", ["--model.latent_chanels", "4"])
    with pytest.raises(ConfigError, match=r"did you mean --dataset\.num_frames\?"):
        load_config(config_dir / "base.py", ["--dataset.num_frame", "5"])
    with pytest.raises(ConfigError, match=r"did you mean --vae_loss_config\.perceptual_loss_weight\?"):
        load_config(CONFIGS_DIR / "vae/train/video_dc_ae.py", ["--vae_loss_config.perceptual_los_weight", "0"])
    cfg = load_config(config_dir / "base.py", ["--model.latent_channels", "4", "--dataset.num_frames", "5",
                                               "--model.random_init", "True"])
    assert (cfg.model.latent_channels, cfg.dataset.num_frames, cfg.model.random_init) == (4, 5, True)
    # a new key takes the type of the parameter's default
    cfg = load_config(config_dir / "base.py", ["--model.latent_channels", "1.6e1", "--model.model_name", "123"])
    assert cfg.model.latent_channels == 16 and type(cfg.model.latent_channels) is int and cfg.model.model_name == "123"
    with pytest.raises(ConfigError, match="--model.latent_channels: expected an int, got 'abc'"):
        load_config(config_dir / "base.py", ["--model.latent_channels", "abc"])


def test_config_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "broken_base.py").write_text("a = 1\nb = (\n")
    (tmp_path / "child.py").write_text('_base_ = ["broken_base.py"]\nc = 2\n')
    with pytest.raises(ConfigError, match=r"broken_base\.py:2: syntax error"):
        load_config(tmp_path / "child.py")
    (tmp_path / "bad.py").write_text("x = 1\ny = 2 +\n")
    with pytest.raises(ConfigError, match=r"bad\.py:2: syntax error"):
        load_config(tmp_path / "bad.py")
    (tmp_path / "name.py").write_text("x = undefined_name\n")
    with pytest.raises(ConfigError, match=r"name\.py: NameError"):
        load_config(tmp_path / "name.py")


def test_shipped_configs_resolve_by_name():
    assert resolve_config_path("video_dc_ae", "train") == CONFIGS_DIR / "vae/train/video_dc_ae.py"
    assert resolve_config_path("video_dc_ae", "inference") == CONFIGS_DIR / "vae/inference/video_dc_ae.py"
    assert resolve_config_path("train/stage1.py", "inference") == CONFIGS_DIR / "vae/train/stage1.py"
    cfg = load_config(resolve_config_path("causal_vae", "train"))  # _base_ inheritance through the shipped tree
    assert cfg.epochs == 10 and cfg.model.type == "causal_vae"
    with pytest.raises(ConfigError, match="shipped: .*video_dc_ae"):
        resolve_config_path("video_dc", "train")


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
            "--model.encoder_depth_list", "[1, 2]",
            "--bucket_config.extra", "(0.5, 2)",
        ],
    )
    assert cfg.model.from_pretrained == "/w/x.pt"
    assert cfg.dataset.data_path == "/data/videos"
    assert cfg.bucket_config == {"256px_ar1:1": {32: (1.0, 1)}, "extra": (0.5, 2)}
    assert cfg.save_dir == "D"
    assert cfg.model.encoder_depth_list == [1, 2]  # a new key under a component dict: a real parameter


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


def test_model_builder_keys_include_every_weight_loading_key():
    from opensora_ae.config import BUILDER_KEYS
    from opensora_ae.models import LOAD_KEYS

    assert set(LOAD_KEYS) <= set(BUILDER_KEYS["model"])


def test_shared_model_keys_are_known_and_typed(config_dir):
    """The keys every family takes through ``**shared`` (tiling, disc_off_grad_ckpt) are real parameters."""
    with pytest.raises(ConfigError, match=r"did you mean --model\.temporal_tile_size\?"):
        load_config(config_dir / "base.py", ["--model.temporal_tile_sise", "16"])
    cfg = load_config(config_dir / "base.py", ["--model.temporal_tile_size", "1.6e1", "--model.disc_off_grad_ckpt",
                                               "TRUE"])
    assert type(cfg.model.temporal_tile_size) is int and cfg.model.disc_off_grad_ckpt is True
