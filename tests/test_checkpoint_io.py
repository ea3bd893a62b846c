"""Checkpoint IO: file formats, wrapper unwrapping, prefix stripping, strict errors, save/from_pretrained."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from opensora_ae.models import build_model
from opensora_ae.models.checkpoint_io import (
    CheckpointError,
    PretrainedMixin,
    detect_checkpoint_family,
    find_weights_file,
    load_state_dict_file,
    load_weights,
)
from opensora_ae.registry import MODELS


@MODELS.register_module("_test_tiny_net", force=True)
class TinyNet(PretrainedMixin, nn.Module):
    """Two convs; enough structure for key matching."""

    def __init__(self, width: int = 4, depth: int = 2, names: tuple[str, ...] = ("a", "b")) -> None:
        super().__init__()
        self.encoder = nn.Sequential(*[nn.Conv3d(width if i else 3, width, 1) for i in range(depth)])
        self.names = names


class WrappedNet(TinyNet):
    """A subclass: the outermost constructor call's kwargs are the config."""

    def __init__(self, extra: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extra = extra


def _state(width: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: torch.randn_like(v) for k, v in TinyNet(width=width).state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth", ".bin", ".ckpt"])
def test_load_file_formats(tmp_path, suffix):
    sd = _state()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    elif suffix == ".ckpt":
        torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "global_step": 3}, path)
    else:
        torch.save({"module": sd}, path)
    loaded = load_state_dict_file(path)
    model = TinyNet()
    load_weights(model, path)
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v)
    assert len(loaded) == len(sd)


def test_ema_entry_and_missing_entry(tmp_path):
    sd = _state()
    path = tmp_path / "w.ckpt"
    torch.save({"state_dict": {k: v * 0 for k, v in sd.items()}, "ema_state_dict": sd}, path)
    assert torch.equal(load_state_dict_file(path, "ema_state_dict")["encoder.0.weight"], sd["encoder.0.weight"])
    with pytest.raises(CheckpointError, match="available entries"):
        load_state_dict_file(path, "nope")


def test_pickle_with_objects_is_refused(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"state_dict": _state(), "obj": nn.Linear(1, 1)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_state_dict_file(path)


def test_find_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder contains: notes.txt"):
        (tmp_path / "notes.txt").write_text("x")
        find_weights_file(tmp_path)
    save_file(_state(), str(tmp_path / "custom.safetensors"))
    assert find_weights_file(tmp_path).name == "custom.safetensors"
    save_file(_state(), str(tmp_path / "diffusion_pytorch_model.safetensors"))
    assert find_weights_file(tmp_path).name == "diffusion_pytorch_model.safetensors"


def test_prefix_stripped_only_when_it_helps():
    sd = _state()
    model = TinyNet()
    load_weights(model, {f"module.model.{k}": v for k, v in sd.items()})
    assert torch.equal(model.encoder[1].bias, sd["encoder.1.bias"])
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_weights(TinyNet(), {f"vae.{k}": v for k, v in sd.items()})
    load_weights(TinyNet(), {f"vae.{k}": v for k, v in sd.items()}, strip_prefixes=("vae.",))


def test_strict_error_lists_keys_and_shapes():
    sd = _state(width=5)
    sd["extra.weight"] = torch.zeros(1)
    del sd["encoder.0.bias"]
    with pytest.raises(CheckpointError) as info:
        load_weights(TinyNet(), sd)
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing keys: [encoder.0.bias]" in message
    assert "1 unexpected keys: [extra.weight]" in message
    assert "encoder.0.weight: checkpoint [5, 3, 1, 1, 1] vs model [4, 3, 1, 1, 1]" in message
    result = load_weights(TinyNet(), sd, strict=False)
    assert result.missing and result.unexpected and result.mismatched


def test_error_lists_at_most_ten_and_names_family():
    sd = {f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight": torch.zeros(1) for i in range(15)}
    with pytest.raises(CheckpointError) as info:
        load_weights(TinyNet(), sd)
    message = str(info.value)
    assert "(+5 more)" in message and "hunyuan_vae" in message
    assert detect_checkpoint_family(["encoder.stages.0.op_list.0.main.conv1.conv.weight"])[0] == "dc_ae"
    assert detect_checkpoint_family(["temporal_vae.encoder.conv_in.conv.weight"])[0] == "opensora_v1_2_vae"
    assert detect_checkpoint_family(["encoder.down.0.block.0.conv1.conv.weight"])[0] == "causal_vae"


def test_config_capture_and_save_roundtrip(tmp_path):
    model = TinyNet(width=6, depth=3)
    assert model.config == {"width": 6, "depth": 3, "names": ["a", "b"]}  # defaults included
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved == {"type": "_test_tiny_net", "width": 6, "depth": 3, "names": ["a", "b"]}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    again = TinyNet.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k
    built = build_model(dict(type="_test_tiny_net", from_pretrained=str(tmp_path / "m")))
    assert torch.equal(built.encoder[2].weight, model.encoder[2].weight)
    file_loaded = TinyNet.from_pretrained(tmp_path / "m" / "model.safetensors", width=6, depth=3)
    assert torch.equal(file_loaded.encoder[0].bias, model.encoder[0].bias)


def test_subclass_records_outer_kwargs(tmp_path):
    model = WrappedNet(extra=3, width=2)
    assert model.config == {"extra": 3, "width": 2}
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["target"].endswith("WrappedNet")
    built = build_model(dict(target=saved["target"], from_pretrained=str(tmp_path)))
    assert built.extra == 3 and built.encoder[0].out_channels == 2


def test_folder_type_mismatch_and_missing_source(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"type": "dc_ae"}))
    save_file(_state(), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="type='dc_ae'"):
        TinyNet.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="from_pretrained"):
        build_model(dict(type="_test_tiny_net", from_pretrained=str(tmp_path / "absent")))


def test_build_model_strict_flag_and_ignore_prefixes(tmp_path):
    sd = _state()
    sd["loss.logvar"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="loss.logvar"):
        build_model(dict(type="_test_tiny_net", from_pretrained=str(tmp_path / "w.safetensors")))
    model = build_model(dict(type="_test_tiny_net", from_pretrained=str(tmp_path / "w.safetensors"), strict=False))
    assert torch.equal(model.encoder[0].weight, sd["encoder.0.weight"])
    assert load_weights(TinyNet(), sd, ignore_prefixes=("loss.",)).ok
