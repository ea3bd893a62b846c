import pytest
import torch
from mmengine.registry import Registry

from opensora_ae.registry import build, import_object

TOYS = Registry("toy")


@TOYS.register_module("scaled_linear")
class ScaledLinear(torch.nn.Linear):
    def __init__(self, in_features: int, out_features: int, scale: float = 1.0) -> None:
        super().__init__(in_features, out_features)
        self.scale = scale


def test_build_type_form_with_extra_kwargs():
    module = build(dict(type="scaled_linear", in_features=3, out_features=5), TOYS, scale=2.5)
    assert isinstance(module, ScaledLinear)
    assert module.weight.shape == (5, 3) and module.scale == 2.5


def test_build_target_form_imports_by_dotted_path():
    module = build(dict(target="torch.nn.Conv3d", params=dict(in_channels=2, out_channels=4, kernel_size=3)), TOYS)
    assert isinstance(module, torch.nn.Conv3d)
    assert module.weight.shape == (4, 2, 3, 3, 3)


def test_build_none_and_errors():
    assert build(None, TOYS) is None
    with pytest.raises(KeyError, match="unknown toy type 'nope'; registered: scaled_linear"):
        build(dict(type="nope"), TOYS)
    with pytest.raises(KeyError, match="needs 'type'"):
        build(dict(in_features=1), TOYS)
    with pytest.raises(ImportError, match="no attribute 'Missing'"):
        import_object("torch.nn.Missing")
    with pytest.raises(ImportError, match="cannot import module"):
        import_object("no_such_pkg.mod.Cls")
