"""Shared pytest settings: deterministic, quiet, CPU-friendly."""

import os

import pytest
import torch

# Tiny test models are faster on one thread, and subprocess runs (torchrun ranks, scripts) must not oversubscribe
# the 2 CI cores: an oversubscribed OpenMP pool spins and runs 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: slower checks (> ~20 s); CI runs them too")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)
