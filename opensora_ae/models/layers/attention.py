"""Self-attention over all tokens of a video feature map, optionally causal over frames.

Tokens are the ``T*H*W`` positions of a ``B C T H W`` map flattened in ``(t h w)`` order. With
``causal=True`` a token of frame ``f`` sees every token of frames ``<= f`` (a block-causal pattern). The mask
is never built: queries are processed one frame at a time against the key prefix of the frames they may see,
which keeps memory linear in the number of tokens and lets ``scaled_dot_product_attention`` use its fused,
mask-free kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def frame_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens_per_frame: int
) -> torch.Tensor:
    """Block-causal attention without a mask.

    Args:
        q, k, v: ``B heads N d`` with ``N = T * tokens_per_frame`` tokens in frame-major order.
        tokens_per_frame: ``H * W``.

    Returns:
        ``B heads N d``: for the queries of frame ``f``, softmax attention over the keys of frames ``0..f``,
        which equals attention with the ``(N, N)`` mask ``frame(key) <= frame(query)``.
    """
    num_tokens = q.shape[-2]
    if num_tokens % tokens_per_frame:
        raise ValueError(f"frame_causal_attention: {num_tokens} tokens is not a multiple of {tokens_per_frame}")
    out = torch.empty_like(q)
    for end in range(tokens_per_frame, num_tokens + 1, tokens_per_frame):
        start = end - tokens_per_frame
        out[..., start:end, :] = F.scaled_dot_product_attention(q[..., start:end, :], k[..., :end, :], v[..., :end, :])
    return out


class VideoSelfAttention(nn.Module):
    """Pre-norm residual self-attention on ``B C T H W`` (the VAE mid-block attention).

    ``x + to_out(attention(to_q(n), to_k(n), to_v(n)))`` with ``n = GroupNorm(x)`` (statistics over groups of
    channels and all of ``T H W``). Parameter names follow diffusers' ``Attention`` (``group_norm``, ``to_q``,
    ``to_k``, ``to_v``, ``to_out.0``), which is the layout of the HunyuanVideo checkpoints.

    Args:
        channels: feature width ``C``.
        num_heads: attention heads (``C`` must divide evenly); HunyuanVideo uses one head of width ``C``.
        num_groups, eps: GroupNorm settings.
        causal: block-causal over frames (see module docstring) instead of full attention.
        dropout: dropout on the output projection.

    A checkpointing unit (``layers/checkpointing.py``).
    """

    gradient_checkpointing = False

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_groups: int = 32,
        eps: float = 1e-6,
        causal: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"VideoSelfAttention: channels={channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.causal = causal
        self.group_norm = nn.GroupNorm(num_groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = x.shape
        # (b, t, h, w, c) -> tokens; a view when x is channels_last_3d.
        tokens = self.group_norm(x).permute(0, 2, 3, 4, 1).reshape(batch, frames * height * width, channels)
        # Plain statements, not a generator expression over the projections: a generator capturing ``tokens``
        # that is then deleted breaks the torch.compile graph. The ``del``s free memory early at inference.
        q = self._split_heads(self.to_q(tokens))
        k = self._split_heads(self.to_k(tokens))
        v = self._split_heads(self.to_v(tokens))
        del tokens
        if self.causal:
            attended = frame_causal_attention(q, k, v, height * width)
        else:
            attended = F.scaled_dot_product_attention(q, k, v)
        del q, k, v
        attended = attended.transpose(1, 2).reshape(batch, frames * height * width, channels)
        out = self.to_out[1](self.to_out[0](attended))
        out = out.view(batch, frames, height, width, channels).permute(0, 4, 1, 2, 3)
        # x first: the sum takes x's memory layout, not the channels-last layout of the token view.
        return x + out

    def _split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        """``B N C -> B heads N C/heads``."""
        batch, num_tokens, channels = tokens.shape
        return tokens.view(batch, num_tokens, self.num_heads, channels // self.num_heads).transpose(1, 2)
