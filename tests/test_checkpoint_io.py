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


# ---- formats: truncated files, pickled objects, shards, Lightning ------------------------------------------------


def _saved_folder(tmp_path, width: int = 4):
    model = TinyNet(width=width)
    model.save_pretrained(tmp_path / "m")
    return model, tmp_path / "m"


def test_truncated_files_name_the_file(tmp_path):
    sd = _state()
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pt")
    for name, kind in (("w.safetensors", "safetensors"), ("w.pt", "torch checkpoint")):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        for load in (load_state_dict_file, lambda p: TinyNet.from_pretrained(p)):
            with pytest.raises(CheckpointError, match=rf"{name} is truncated or not a {kind}"):
                load(tmp_path / name)
    (tmp_path / "tiny.safetensors").write_bytes(b"\x03\x00")
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors is truncated or not a safetensors file"):
        load_state_dict_file(tmp_path / "tiny.safetensors")


def test_pickled_objects_are_one_clear_error_on_every_path(tmp_path):
    import argparse

    source = TinyNet()
    source.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    ckpt = {"state_dict": source.state_dict(), "global_step": 1, "hyper_parameters": argparse.Namespace(lr=1e-4)}
    torch.save(ckpt, tmp_path / "run.ckpt")
    paths = (
        lambda: load_state_dict_file(tmp_path / "run.ckpt"),
        lambda: TinyNet.from_pretrained(tmp_path / "run.ckpt"),
        lambda: TinyNet.from_pretrained(tmp_path),
        lambda: build_model(dict(from_pretrained=str(tmp_path / "run.ckpt"))),
        lambda: load_weights(TinyNet(), tmp_path / "run.ckpt"),
    )
    messages = set()
    for load in paths:
        with pytest.raises(CheckpointError, match=r"run\.ckpt: holds Python objects besides tensors") as info:
            load()
        messages.add(str(info.value))
    assert len(messages) == 1 and "argparse.Namespace" in messages.pop()
    assert "\x1b" not in str(info.value)


def test_sharded_safetensors_folder(tmp_path):
    model = TinyNet(width=4, depth=2)
    state = model.state_dict()
    shards = {"model-00001-of-00002.safetensors": ["encoder.0.weight", "encoder.0.bias"],
              "model-00002-of-00002.safetensors": ["encoder.1.weight", "encoder.1.bias"]}
    folder = tmp_path / "sharded"
    folder.mkdir()
    for name, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(folder / name))
    weight_map = {key: name for name, keys in shards.items() for key in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"type": "_test_tiny_net", "width": 4, "depth": 2}))
    assert find_weights_file(folder).name == "model.safetensors.index.json"
    loaded = build_model(dict(from_pretrained=str(folder)))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"shard 'model-00002-of-00002\.safetensors'.*missing"):
        TinyNet.from_pretrained(folder)


def test_lightning_ckpt_loads_ema_unless_state_dict_is_picked(tmp_path):
    model, folder = _saved_folder(tmp_path)
    (folder / "model.safetensors").unlink()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {f"module.{k}": v + 1 for k, v in plain.items()}
    torch.save({"state_dict": plain, "ema_state_dict": ema, "global_step": 5}, folder / "last.ckpt")
    for loaded in (TinyNet.from_pretrained(folder / "last.ckpt"), build_model(dict(from_pretrained=str(folder)))):
        assert torch.equal(loaded.encoder[0].weight, plain["encoder.0.weight"] + 1)
    picked = build_model(dict(from_pretrained=str(folder / "last.ckpt"), state_dict_key="state_dict"))
    assert torch.equal(picked.encoder[0].weight, plain["encoder.0.weight"])


# ---- from_pretrained: eval, dtype/device, no random init, buffers ---------------------------------------------------


class TableNet(TinyNet):
    """A non-persistent buffer computed in the constructor: never in a checkpoint, must survive meta loading."""

    def __init__(self, width: int = 4) -> None:
        super().__init__(width=width)
        self.register_buffer("table", torch.arange(width, dtype=torch.float32) * 0.5, persistent=False)


def test_from_pretrained_eval_dtype_and_no_random_init(tmp_path, monkeypatch):
    model, folder = _saved_folder(tmp_path)
    init_calls = []
    original = nn.init.kaiming_uniform_

    def recording_init(tensor, *args, **kwargs):
        init_calls.append(tensor.is_meta)
        return original(tensor, *args, **kwargs)

    monkeypatch.setattr(nn.init, "kaiming_uniform_", recording_init)
    loaded = TinyNet.from_pretrained(folder, torch_dtype=torch.float64, device="cpu")
    assert init_calls and all(init_calls)  # every weight init ran on meta tensors: nothing was computed
    assert not loaded.training and loaded.encoder[0].weight.dtype == torch.float64
    assert loaded.encoder[0].weight.device.type == "cpu"
    assert torch.equal(loaded.encoder[1].weight, model.encoder[1].weight.double())
    assert TinyNet.from_pretrained(folder).encoder[0].weight.dtype == torch.float32

    table = TableNet(width=4)
    table.save_pretrained(tmp_path / "table")
    again = TableNet.from_pretrained(tmp_path / "table")
    assert torch.equal(again.table, torch.tensor([0.0, 0.5, 1.0, 1.5]))


def test_non_strict_load_keeps_real_init_for_missing_parameters(tmp_path):
    sd = {k: v for k, v in _state().items() if k != "encoder.1.weight"}
    save_file(sd, str(tmp_path / "w.safetensors"))
    model = build_model(dict(type="_test_tiny_net", from_pretrained=str(tmp_path / "w.safetensors"), strict=False))
    assert not model.encoder[1].weight.is_meta and model.encoder[1].weight.abs().sum() > 0
    assert torch.equal(model.encoder[0].weight, sd["encoder.0.weight"])


@pytest.mark.parametrize("fixture", ["opensora2_dc_ae", "hunyuan_vae", "opensora1_2_vae", "osp_causalvae_v1_1"])
def test_every_family_loads_on_meta_with_the_buffers_of_a_real_build(fixture):
    from parity_utils import model_config

    from opensora_ae.registry import build

    cfg = model_config(fixture)
    loaded = build_model(cfg)
    real = build({k: v for k, v in cfg.items() if k != "from_pretrained"}, MODELS)
    load_weights(real, cfg["from_pretrained"])
    assert not loaded.training
    tensors = dict(real.named_parameters()) | dict(real.named_buffers())  # non-persistent buffers included
    loaded_tensors = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert tensors.keys() == loaded_tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(loaded_tensors[name], tensor), name


# ---- config.json: family lookup, metadata, foreign folders, FSDP2 ---------------------------------------------------


def test_build_model_reads_the_family_from_config_json(tmp_path):
    model, folder = _saved_folder(tmp_path, width=3)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": "org/tiny", "_class_name": "X"}))
    built = build_model(dict(from_pretrained=str(folder)))
    assert type(built) is TinyNet and built.config == model.config
    bare = tmp_path / "bare" / "w.safetensors"  # no config.json beside it: the config must name the family
    bare.parent.mkdir()
    save_file(model.state_dict(), str(bare))
    with pytest.raises(KeyError, match="needs 'type'.*or from_pretrained pointing at a folder"):
        build_model(dict(from_pretrained=str(bare), width=3))
    assert type(build_model(dict(type="_test_tiny_net", from_pretrained=str(bare), width=3))) is TinyNet
    with pytest.raises(CheckpointError, match="holds a '_test_tiny_net' model but the model config builds 'dc_ae'"):
        build_model(dict(type="dc_ae", from_pretrained=str(folder)))


def test_unknown_config_keys_name_the_file(tmp_path):
    _, folder = _saved_folder(tmp_path)
    (folder / "config.json").write_text(json.dumps({"type": "_test_tiny_net", "widht": 4}))
    with pytest.raises(CheckpointError, match=r"config\.json: unknown TinyNet config keys \['widht'\]"):
        TinyNet.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: invalid JSON"):
        build_model(dict(from_pretrained=str(folder)))


def test_diffusers_2d_dc_ae_folder_is_one_clear_error(tmp_path):
    folder = tmp_path / "dc-ae-f32c32-in-1.0-diffusers"
    folder.mkdir()
    config = {"_class_name": "AutoencoderDC", "_diffusers_version": "0.32.0", "latent_channels": 32}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"encoder.conv_in.weight": torch.zeros(1)}, str(folder / "diffusion_pytorch_model.safetensors"))
    from opensora_ae.models.dc_ae import VideoDCAE

    for load in (lambda: build_model(dict(type="dc_ae", from_pretrained=str(folder))),
                 lambda: VideoDCAE.from_pretrained(folder)):
        with pytest.raises(CheckpointError, match=r"_class_name 'AutoencoderDC' is diffusers' 2-D \(image\) DC-AE"):
            load()


def test_tencent_hunyuan_vae_folder_loads(tmp_path):
    from opensora_ae.models.hunyuan_vae import HunyuanVAE

    tiny = dict(latent_channels=4, block_out_channels=[8, 8, 16, 16], layers_per_block=1, norm_num_groups=2)
    source = HunyuanVAE(**tiny)
    folder = tmp_path / "hunyuan-video-t2v-720p" / "vae"
    folder.mkdir(parents=True)
    config = {
        "_class_name": "AutoencoderKLCausal3D", "_diffusers_version": "0.4.2", "act_fn": "silu",
        "block_out_channels": tiny["block_out_channels"], "down_block_types": ["DownEncoderBlockCausal3D"] * 4,
        "in_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 2, "out_channels": 3,
        "sample_size": 128, "sample_tsize": 32, "up_block_types": ["UpDecoderBlockCausal3D"] * 4,
        "scaling_factor": 0.476986, "time_compression_ratio": 4, "mid_block_add_attention": True,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({f"vae.{k}": v for k, v in source.state_dict().items()}, folder / "pytorch_model.pt")
    for loaded in (build_model(dict(from_pretrained=str(folder))), HunyuanVAE.from_pretrained(folder)):
        assert type(loaded) is HunyuanVAE
        assert loaded.config["spatial_tile_size"] == 128 and loaded.config["temporal_tile_size"] == 32
        state = loaded.state_dict()
        assert all(torch.equal(state[k], v) for k, v in source.state_dict().items())


def test_fsdp2_model_saves_its_registered_type(tmp_path):
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from opensora_ae.models.config_io import write_config_json

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = fully_shard(TinyNet(width=2))  # swaps the class for a dynamic FSDPTinyNet(FSDPModule, TinyNet)
        assert type(model).__name__ == "FSDPTinyNet"
        write_config_json(model, tmp_path)
    finally:
        dist.destroy_process_group()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["type"] == "_test_tiny_net" and "target" not in saved
    save_file(TinyNet(width=2).state_dict(), str(tmp_path / "model.safetensors"))
    assert type(build_model(dict(from_pretrained=str(tmp_path)))) is TinyNet
    # Folders written before this fix carry "target": "abc.FSDP<Class>": they load too.
    (tmp_path / "config.json").write_text(json.dumps({"target": "abc.FSDPTinyNet", "width": 2}))
    assert type(build_model(dict(from_pretrained=str(tmp_path)))) is TinyNet


def test_legacy_format_pickle_with_objects_and_non_checkpoint_files(tmp_path):
    import argparse

    torch.save({"state_dict": _state(), "args": argparse.Namespace(lr=1.0)}, tmp_path / "legacy.pt",
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"legacy\.pt: holds Python objects besides tensors \(argparse\."):
        load_state_dict_file(tmp_path / "legacy.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.pt is truncated or not a torch checkpoint"):
        load_state_dict_file(tmp_path / "notes.pt")
