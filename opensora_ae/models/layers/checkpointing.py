"""The one activation-checkpointing rule of every family.

A block that may run under activation checkpointing carries a ``gradient_checkpointing`` flag (set by
``VideoAutoencoder.set_gradient_checkpointing``); its parent calls it through :func:`run_block`, which checkpoints
it when the flag is set and autograd is recording, as diffusers' blocks do (no separate ``training`` test: a
frozen model in eval mode that is differentiated through still saves the memory).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_block(block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``block(*args)``, under non-reentrant activation checkpointing when ``torch.is_grad_enabled()`` and
    ``block.gradient_checkpointing`` are both true."""
    if torch.is_grad_enabled() and getattr(block, "gradient_checkpointing", False):
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)
