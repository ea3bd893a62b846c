"""Helpers for the parity tests against ``tests/fixtures/parity/<name>/`` (copies of ``../shared/parity``).

Each fixture folder holds ``reference.json``, ``weights.safetensors``, ``io.safetensors``, ``keys_released.txt``
and the toolkit config ``model.py`` whose ``model`` dict builds the tiny model through ``build_model``
(``from_pretrained`` relative to the folder).

Typical use::

    model = build_fixture_model("opensora2_dc_ae")            # strict load of weights.safetensors
    io = load_io("opensora2_dc_ae")
    assert_matches_reference(model.encode(io["x"]), io["z"], "z")
    assert_released_layout(model_on_meta, "opensora2_dc_ae")    # names + shapes == keys_released.txt
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from opensora_ae.config import load_config
from opensora_ae.models import build_model

@pytest.fixture(scope="module")
def one_thread():
    """Run a module's model tests on one intra-op thread: on a shared, busy 2-core machine two OpenMP threads
    contend with other processes and tiny models run 10-30x slower. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` after importing it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "parity"
TOLERANCE = 1e-4


def fixture_dir(name: str) -> Path:
    path = FIXTURES_DIR / name
    if not path.is_dir():
        raise FileNotFoundError(f"parity fixture {name!r} missing: copy ../shared/parity/{name} to {path}")
    return path


def load_reference(name: str) -> dict[str, Any]:
    """The fixture's ``reference.json``."""
    return json.loads((fixture_dir(name) / "reference.json").read_text())


def load_io(name: str) -> dict[str, torch.Tensor]:
    """The fixture's stored input and reference outputs (float32, ``B C T H W``)."""
    return load_file(str(fixture_dir(name) / "io.safetensors"))


def load_fixture_config(name: str) -> Any:
    """The fixture's ``model.py`` toolkit config, with ``model.from_pretrained`` made absolute."""
    cfg = load_config(fixture_dir(name) / "model.py")
    if cfg.model.get("from_pretrained"):
        cfg.model.from_pretrained = str(fixture_dir(name) / cfg.model.from_pretrained)
    return cfg


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The ``model`` dict of the fixture config as a plain dict, updated with ``overrides``."""
    return {**load_fixture_config(name).model.to_dict(), **overrides}


def build_fixture_model(name: str, **overrides: Any) -> nn.Module:
    """Build the tiny model via ``build_model`` (strict load of the fixture weights), in eval mode."""
    return build_model(model_config(name, **overrides)).eval()


def max_abs_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.detach().float().cpu() - expected.float()).abs().max().item()


def assert_matches_reference(
    actual: torch.Tensor, expected: torch.Tensor, what: str, tolerance: float = TOLERANCE
) -> float:
    """Assert ``max|a - b| <= tolerance * max(1, max|ref|)`` (README rule) and equal shapes; returns the error."""
    assert tuple(actual.shape) == tuple(expected.shape), f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = max_abs_diff(actual, expected)
    bound = tolerance * max(1.0, expected.abs().max().item())
    assert error <= bound, f"{what}: max abs error {error:.3g} > {bound:.3g}"
    return error


def assert_io_matches(io: Mapping[str, torch.Tensor], **actual: torch.Tensor) -> None:
    """``assert_matches_reference`` of each keyword's tensor against the ``io`` entry of the same name."""
    for key, tensor in actual.items():
        assert_matches_reference(tensor, io[key], key)


def released_keys(name: str) -> dict[str, list[int]]:
    """``keys_released.txt`` as ``{key: shape}``."""
    keys = {}
    for line in (fixture_dir(name) / "keys_released.txt").read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            keys[key] = json.loads(shape)
    return keys


def state_dict_shapes(model: nn.Module, rename: Callable[[str], str] = lambda key: key) -> dict[str, list[int]]:
    """``{checkpoint name: shape}`` of a model (works on the meta device)."""
    return {rename(key): list(value.shape) for key, value in model.state_dict().items()}


def assert_released_layout(shapes: Mapping[str, list[int]], name: str) -> None:
    """Assert the names and shapes equal the released checkpoint's ``keys_released.txt``."""
    released = released_keys(name)
    missing = sorted(set(released) - set(shapes))
    unexpected = sorted(set(shapes) - set(released))
    wrong = [f"{k}: {shapes[k]} != {released[k]}" for k in released if k in shapes and shapes[k] != released[k]]
    assert not (missing or unexpected or wrong), (
        f"layout differs from {name}/keys_released.txt: missing {missing[:10]}, unexpected {unexpected[:10]}, "
        f"shapes {wrong[:10]}"
    )
