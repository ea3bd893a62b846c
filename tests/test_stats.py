"""Latent statistics: running moments against numpy, normalising factors, scripts/vae/stats.py end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inference_utils import (load_tiny_model, make_video_folder, run_script, tiny_model_cfg,
                             write_config, write_tiny_weights)
from opensora_ae.inference.runner import build_inference_dataset, iter_clips
from opensora_ae.inference.stats import LatentMoments
from opensora_ae.train.parallel import DistContext

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def latent_chunks(seed: int = 0) -> list[torch.Tensor]:
    """``B 4 t h w`` chunks of different batch, time and size, each channel with its own mean and spread."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.tensor([-1.5, 0.0, 0.7, 3.0]).view(1, 4, 1, 1, 1)
    stds = torch.tensor([0.2, 1.0, 2.5, 0.9]).view(1, 4, 1, 1, 1)
    shapes = [(2, 4, 3, 5, 6), (1, 4, 1, 5, 6), (3, 4, 2, 4, 4), (1, 4, 5, 2, 3)]
    return [torch.randn(shape, generator=generator) * stds + means for shape in shapes]


def channel_values(chunks: list[torch.Tensor]) -> np.ndarray:
    """``C N`` numpy array of every value per channel."""
    return np.concatenate([chunk.transpose(0, 1).reshape(4, -1).numpy().astype(np.float64) for chunk in chunks], 1)


def test_moments_fed_in_chunks_match_numpy():
    chunks = latent_chunks()
    moments = LatentMoments()
    for chunk in chunks:
        moments.add(chunk)
    summary = moments.summary()
    values = channel_values(chunks)
    assert summary["num_values"] == values.size and summary["num_channels"] == 4
    np.testing.assert_allclose(summary["channel_mean"], values.mean(axis=1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(summary["channel_std"], values.std(axis=1), rtol=1e-10)
    assert summary["mean"] == pytest.approx(values.mean(), rel=1e-10)
    assert summary["std"] == pytest.approx(values.std(), rel=1e-10)


def test_factors_normalise_to_zero_mean_unit_variance():
    chunks = latent_chunks(1)
    moments = LatentMoments()
    for chunk in chunks:
        moments.add(chunk)
    summary = moments.summary()
    normalised = (channel_values(chunks) - summary["shift_factor"]) * summary["scaling_factor"]
    assert normalised.mean() == pytest.approx(0.0, abs=1e-10)
    assert normalised.std() == pytest.approx(1.0, rel=1e-10)
    # Open-Sora 1.2 style, per channel: (z - channel_mean) / channel_std.
    per_channel = (channel_values(chunks) - np.array(summary["channel_mean"])[:, None]) / np.array(
        summary["channel_std"])[:, None]
    np.testing.assert_allclose(per_channel.std(axis=1), 1.0, rtol=1e-10)


def test_merging_parts_equals_one_pass_and_channels_must_agree():
    chunks = latent_chunks(2)
    whole, first, second = LatentMoments(), LatentMoments(), LatentMoments()
    for chunk in chunks:
        whole.add(chunk)
    for chunk in chunks[:1]:
        first.add(chunk)
    for chunk in chunks[1:]:
        second.add(chunk)
    merged = LatentMoments()
    for part in (first, LatentMoments(), second):  # an empty part: a rank that got no clips
        merged.merge(part)
    for key, value in whole.summary().items():
        assert merged.summary()[key] == pytest.approx(value, rel=1e-12)
    with pytest.raises(ValueError, match="channels"):
        merged.add(torch.zeros(1, 3, 1, 2, 2))
    with pytest.raises(ValueError, match="every input was skipped"):
        LatentMoments().summary()


def test_stats_script_writes_the_json_of_the_encoded_dataset(tmp_path, monkeypatch, capsys):
    weights = write_tiny_weights(tmp_path / "weights.safetensors")
    data = make_video_folder(tmp_path / "data")
    config = write_config(tmp_path / "stats.py", {**tiny_model_cfg(), "from_pretrained": str(weights)}, data)
    output = tmp_path / "out/latent_stats.json"
    run_script("stats.py", [str(config), "--output", str(output), "--batch_size", "2"], monkeypatch)
    assert f"wrote {output}" in capsys.readouterr().out
    summary = json.loads(output.read_text())

    # Independent computation: encode the same preprocessed clips one by one, moments in numpy.
    model = load_tiny_model(weights)
    cfg = dict(dataset=dict(type="video_text", data_path=str(data)), num_frames=5, resolution=(16, 24))
    with torch.no_grad():
        latents = [model.encode(clip.video[None]) for clip in iter_clips(build_inference_dataset(cfg), CPU, [])]
    values = channel_values(latents)
    assert summary["num_videos"] == 3 and summary["num_values"] == values.size
    np.testing.assert_allclose(summary["channel_mean"], values.mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(summary["channel_std"], values.std(axis=1), rtol=1e-4)
    assert summary["scaling_factor"] == pytest.approx(1 / values.std(), rel=1e-4)
    assert summary["shift_factor"] == pytest.approx(values.mean(), rel=1e-4, abs=1e-5)
    assert sorted(summary["skipped"]) == sorted(str(data / name) for name in ("sub/broken.mp4", "sub/short.mp4"))
    assert "too short" in summary["skipped"][str(data / "sub/short.mp4")]
