"""Hugging Face Hub ids as from_pretrained sources, resolved from a local cache laid out as huggingface_hub lays it
out (``models--org--repo/{refs/main, snapshots/<commit>/...}``), offline: no network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from parity_utils import fixture_dir, model_config

from opensora_ae.models import build_model
from opensora_ae.models.causal_vae import CausalVAEModel
from opensora_ae.models.hub import resolve_pretrained, split_hub_id

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CAUSAL_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vae" / "causal_vae"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def cached_snapshot(cache: Path, repo_id: str) -> Path:
    """An empty cached snapshot of ``repo_id`` at ``COMMIT`` (refs/main points at it), as huggingface_hub writes."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    return snapshot


def _assert_same_state(model: torch.nn.Module, expected: torch.nn.Module) -> None:
    state = model.state_dict()
    assert state.keys() == expected.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in expected.state_dict().items())


def test_split_hub_id() -> None:
    assert split_hub_id("hpcai-tech/OpenSora-VAE-v1.2") == ("hpcai-tech/OpenSora-VAE-v1.2", None, None)
    assert split_hub_id("LanguageBind/Open-Sora-Plan-v1.1.0/vae") == ("LanguageBind/Open-Sora-Plan-v1.1.0", "vae", None)
    assert split_hub_id("hpcai-tech/Open-Sora-v2/hunyuan_vae.safetensors") == (
        "hpcai-tech/Open-Sora-v2", None, "hunyuan_vae.safetensors")
    for local_looking in ("./ckpts/vae", "/abs/path", "~/x/y", "a/b//c", "single"):
        assert split_hub_id(local_looking) is None


def test_opensora_v1_2_repo_id(hub_cache) -> None:
    """``hpcai-tech/OpenSora-VAE-v1.2``: the released layout (transformers config.json + model.safetensors)."""
    snapshot = cached_snapshot(hub_cache, "hpcai-tech/OpenSora-VAE-v1.2")
    cfg = model_config("opensora1_2_vae")
    shutil.copy(cfg.pop("from_pretrained"), snapshot / "model.safetensors")
    released = {"architectures": ["VideoAutoencoderPipeline"], "model_type": "VideoAutoencoderPipeline",
                "micro_frame_size": 17, "freeze_vae_2d": False, "shift": [0.0] * 4, "scale": [1.0] * 4,
                "vae_2d": {"type": "VideoAutoencoderKL", "micro_batch_size": 4},
                "vae_temporal": {"type": "VAE_Temporal_SD", "from_pretrained": None}}  # fmt: skip
    (snapshot / "config.json").write_text(json.dumps(released))
    model = build_model({**cfg, "from_pretrained": "hpcai-tech/OpenSora-VAE-v1.2"})
    expected = build_model(model_config("opensora1_2_vae"))
    _assert_same_state(model, expected)
    assert model.micro_frame_size == 17


def test_repo_with_subfolder_both_spellings(hub_cache, tmp_path) -> None:
    """``LanguageBind/Open-Sora-Plan-v1.1.0`` + ``subfolder="vae"``, or ``.../vae`` in the id itself."""
    snapshot = cached_snapshot(hub_cache, "LanguageBind/Open-Sora-Plan-v1.1.0")
    source = CausalVAEModel.from_config_file(CAUSAL_CONFIGS / "v1_1.json", hidden_size=32,
                                             hidden_size_mult=[1, 1, 1, 1], num_res_blocks=1)
    source.save_pretrained(snapshot / "vae")
    config = json.loads((snapshot / "vae" / "config.json").read_text())
    config["_name_or_path"] = "../Open-Sora-Plan-v1.1.0/vae"  # as the release's config.json has it
    (snapshot / "vae" / "config.json").write_text(json.dumps(config))
    loaded = (
        build_model(dict(from_pretrained="LanguageBind/Open-Sora-Plan-v1.1.0", subfolder="vae")),
        build_model(dict(from_pretrained="LanguageBind/Open-Sora-Plan-v1.1.0/vae")),
        CausalVAEModel.from_pretrained("LanguageBind/Open-Sora-Plan-v1.1.0", subfolder="vae"),
    )
    for model in loaded:
        assert isinstance(model, CausalVAEModel) and model.config["hidden_size"] == 32
        _assert_same_state(model, source)


def test_single_file_id(hub_cache) -> None:
    """``org/repo/file.safetensors`` as Open-Sora 2.0 configs write it (the architecture from the config)."""
    snapshot = cached_snapshot(hub_cache, "hpcai-tech/Open-Sora-v2")
    cfg = model_config("hunyuan_vae")
    shutil.copy(cfg.pop("from_pretrained"), snapshot / "hunyuan_vae.safetensors")
    model = build_model({**cfg, "from_pretrained": "hpcai-tech/Open-Sora-v2/hunyuan_vae.safetensors"})
    _assert_same_state(model, build_model(model_config("hunyuan_vae")))
    assert resolve_pretrained("hpcai-tech/Open-Sora-v2/hunyuan_vae.safetensors") == snapshot / "hunyuan_vae.safetensors"


def test_offline_and_not_cached_is_one_line_with_the_download_command(hub_cache) -> None:
    cases = {
        "hpcai-tech/OpenSora-VAE-v1.2": "hf download hpcai-tech/OpenSora-VAE-v1.2`",
        "LanguageBind/Open-Sora-Plan-v1.1.0/vae": "hf download LanguageBind/Open-Sora-Plan-v1.1.0 --include 'vae/*'`",
        "hpcai-tech/Open-Sora-v2/hunyuan_vae.safetensors":
            "hf download hpcai-tech/Open-Sora-v2 hunyuan_vae.safetensors`",
    }
    for source, command in cases.items():
        with pytest.raises(FileNotFoundError) as info:
            build_model(dict(type="hunyuan_vae", from_pretrained=source))
        message = str(info.value)
        assert "\n" not in message and repr(source) in message and command in message
        assert "HF_HUB_OFFLINE=1" in message and "huggingface-cli download" in message
    # A cached repo without the asked-for subfolder names what is missing.
    cached_snapshot(hub_cache, "org/partial")
    with pytest.raises(FileNotFoundError, match=r"no 'vae' in its snapshot.*--include 'vae/\*'"):
        resolve_pretrained("org/partial", subfolder="vae")
    with pytest.raises(FileNotFoundError, match=r"from_pretrained='\./missing/folder': no such file or folder"):
        resolve_pretrained("./missing/folder")


def test_local_paths_win_over_hub_ids(tmp_path, monkeypatch, hub_cache) -> None:
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "org" / "repo"
    cfg = model_config("hunyuan_vae")
    local.mkdir(parents=True)
    shutil.copy(cfg.pop("from_pretrained"), local / "weights.safetensors")
    assert resolve_pretrained("org/repo") == Path("org/repo")
    model = build_model({**cfg, "from_pretrained": "org/repo/weights.safetensors"})
    assert fixture_dir("hunyuan_vae").is_dir() and not model.training
