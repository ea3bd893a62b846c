"""Shared pytest settings: deterministic, quiet, CPU-friendly."""

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: slower checks (> ~20 s); CI runs them too")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)
