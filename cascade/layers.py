"""Building blocks of the Video U-Net (spec §2.5).

Activations travel as ``(B*T, C, H, W)`` ("frames as batch"); temporal layers view them as
``(B, T, C, H, W)``. Every temporal residual path is zero-initialised, so an untrained video
model equals the per-frame image model. All attention uses ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentionPool",
    "CrossAttention",
    "Downsample",
    "FeedForward",
    "ResBlock",
    "SpatialTransformer",
    "TemporalAttention",
    "TemporalConv",
    "Upsample",
    "relative_position_buckets",
    "sinusoidal_embedding",
]


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of a float tensor ``(N,)`` -> ``(N, dim)`` (fp32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def attention(q, k, v, mask=None) -> torch.Tensor:
    """SDPA whose softmax runs in fp32: on the CPU, half-precision inputs are upcast (GPU kernels
    accumulate in fp32 themselves)."""
    if q.dtype in (torch.float16, torch.bfloat16) and q.device.type == "cpu":
        mask = mask.float() if mask is not None and mask.is_floating_point() else mask
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).to(q.dtype)
    if mask is not None and mask.is_floating_point():
        mask = mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in fp32 (numerically safe in fp16/bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            w = self.weight.float() if self.weight is not None else None
            b = self.bias.float() if self.bias is not None else None
            return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)
        return super().forward(x)


class LayerNorm32(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            w = self.weight.float() if self.weight is not None else None
            b = self.bias.float() if self.bias is not None else None
            return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)
        return super().forward(x)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> FiLM(e) -> SiLU -> dropout -> conv3x3 (zero-init), plus skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = GroupNorm32(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = GroupNorm32(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (N, Cin, H, W), emb: (N, E) already SiLU-activated
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class TemporalConv(nn.Module):
    """Residual temporal convolution (kernel 3 over frames, per pixel): GN -> SiLU -> Conv(3,1,1),
    zero-initialised; the residual is gated per sample by the video mask (0 = packed images)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = GroupNorm32(groups, channels)
        self.conv = zero_init(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))

    def forward(self, x: torch.Tensor, frames: int, video_mask: torch.Tensor | None) -> torch.Tensor:
        if frames == 1:
            return x
        n, c, h, w = x.shape
        y = F.silu(self.norm(x)).reshape(n // frames, frames, c, h, w).transpose(1, 2)  # (B, C, T, H, W)
        y = self.conv(y).transpose(1, 2).reshape(n, c, h, w)
        if video_mask is not None:
            y = y * video_mask.to(y.dtype).repeat_interleave(frames)[:, None, None, None]
        return x + y


def relative_position_buckets(rel: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5-style buckets of relative positions ``key - query``: exact for small
    offsets, log-spaced up to ``max_distance``, so longer windows reuse the far buckets."""
    half = num_buckets // 2
    sign_bucket = (rel > 0).long() * half
    n = rel.abs()
    exact = half // 2
    log_part = torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    far = (exact + log_part.long()).clamp(max=half - 1)
    return sign_bucket + torch.where(n < exact, n, far)


class TemporalAttention(nn.Module):
    """Bidirectional self-attention over frames at each pixel, with a bucketed relative position
    bias. Packed-image items (video_mask 0) attend only to themselves (paper: masked attention maps)."""

    def __init__(self, channels: int, head_dim: int, num_buckets: int, max_distance: int):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = LayerNorm32(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_init(nn.Linear(channels, channels))
        self.rel_bias = nn.Embedding(num_buckets, self.heads)
        self.num_buckets, self.max_distance = num_buckets, max_distance

    def bias(self, frames: int, device) -> torch.Tensor:
        pos = torch.arange(frames, device=device)
        buckets = relative_position_buckets(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.rel_bias(buckets).permute(2, 0, 1)  # (heads, T, T)

    def forward(self, x: torch.Tensor, frames: int, video_mask: torch.Tensor | None) -> torch.Tensor:
        n, c, h, w = x.shape
        b, hd = n // frames, c // self.heads
        tok = x.reshape(b, frames, c, h * w).transpose(2, 3)  # (B, T, HW, C)
        qkv = self.qkv(self.norm(tok)).reshape(b, frames, h * w, 3, self.heads, hd)
        q, k, v = qkv.permute(3, 0, 2, 4, 1, 5).unbind(0)  # each (B, HW, heads, T, d)
        mask = self.bias(frames, x.device)[None, None]  # (1, 1, heads, T, T)
        if video_mask is not None and not bool(video_mask.all()):
            eye = torch.eye(frames, dtype=torch.bool, device=x.device)
            allowed = video_mask.bool()[:, None, None] | eye  # (B, T, T)
            mask = mask.masked_fill(~allowed[:, None, None], float("-inf"))
        o = attention(q, k, v, mask)  # (B, HW, heads, T, d)
        o = self.out(o.permute(0, 3, 1, 2, 4).reshape(b, frames, h * w, c))  # (B, T, HW, C)
        return x + o.transpose(2, 3).reshape(n, c, h, w)


class SelfAttention(nn.Module):
    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = LayerNorm32(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_init(nn.Linear(channels, channels))

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        n, length, c = tok.shape
        q, k, v = self.qkv(self.norm(tok)).reshape(n, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        o = attention(q, k, v).transpose(1, 2).reshape(n, length, c)
        return tok + self.out(o)


class CrossAttention(nn.Module):
    """Attention from image tokens to text tokens (layer-normed), with a key-padding mask and a
    learned null key/value slot that is always visible (so text-free rows are well defined)."""

    def __init__(self, channels: int, text_dim: int, head_dim: int):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = LayerNorm32(channels)
        self.text_norm = LayerNorm32(text_dim)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(text_dim, 2 * channels)
        self.null_kv = nn.Parameter(torch.randn(2, channels) * 0.02)
        self.out = zero_init(nn.Linear(channels, channels))

    def forward(self, tok: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        # tok: (N, L_img, C) with N = B (shared text over frames) or B*T (per-frame text)
        n, length, c = tok.shape
        hd = c // self.heads
        k, v = self.kv(self.text_norm(text.to(tok.dtype))).chunk(2, dim=-1)  # (N, L_txt, C)
        nk, nv = self.null_kv.to(tok.dtype)[:, None, None].expand(2, n, 1, c)
        k, v = torch.cat([nk, k], 1), torch.cat([nv, v], 1)
        mask = F.pad(text_mask.bool(), (1, 0), value=True)[:, None, None]  # (N, 1, 1, 1 + L_txt)
        q = self.q(self.norm(tok)).reshape(n, length, self.heads, hd).transpose(1, 2)
        k = k.reshape(n, -1, self.heads, hd).transpose(1, 2)
        v = v.reshape(n, -1, self.heads, hd).transpose(1, 2)
        o = attention(q, k, v, mask).transpose(1, 2).reshape(n, length, c)
        return tok + self.out(o)


class AttentionPool(nn.Module):
    """Pooling of the text tokens by attention from learned queries, one per head (Imagen's
    alternative to mean pooling for the global conditioning vector): a head can pick out one word
    (a direction, a speed) that a mean over all tokens blurs. The MLP's last layer is
    zero-initialised, so it starts as a no-op next to the mean-pooled path."""

    def __init__(self, text_dim: int, out_dim: int, heads: int, head_dim: int = 32):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = LayerNorm32(text_dim)
        self.query = nn.Parameter(torch.randn(heads, head_dim) * 0.02)
        self.kv = nn.Linear(text_dim, 2 * heads * head_dim)
        self.out = nn.Sequential(nn.Linear(heads * head_dim, out_dim), nn.SiLU(), zero_init(nn.Linear(out_dim, out_dim)))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, length, _ = tokens.shape
        k, v = self.kv(self.norm(tokens.to(self.kv.weight.dtype))).reshape(n, length, 2, self.heads, self.head_dim).unbind(2)
        logits = torch.einsum("nlhd,hd->nhl", k, self.query.to(k.dtype)) * self.head_dim**-0.5
        valid = mask.bool()
        valid = valid | ~valid.any(dim=1, keepdim=True)  # a row without tokens (null text) attends to all
        w = logits.masked_fill(~valid[:, None], float("-inf")).softmax(dim=-1)
        pooled = torch.einsum("nhl,nlhd->nhd", w, v).reshape(n, self.heads * self.head_dim)
        return self.out(pooled).float()


class FeedForward(nn.Module):
    """GEGLU feed-forward, zero-initialised output."""

    def __init__(self, channels: int, mult: int):
        super().__init__()
        self.norm = LayerNorm32(channels)
        self.proj = nn.Linear(channels, 2 * mult * channels)
        self.out = zero_init(nn.Linear(mult * channels, channels))

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        a, g = self.proj(self.norm(tok)).chunk(2, dim=-1)
        return tok + self.out(a * F.gelu(g))


class SpatialTransformer(nn.Module):
    """Per-frame spatial self-attention, text cross-attention and feed-forward over H*W tokens."""

    def __init__(self, channels: int, head_dim: int, text_dim: int, self_attn: bool, cross_attn: bool, ff_mult: int):
        super().__init__()
        self.self_attn = SelfAttention(channels, head_dim) if self_attn else None
        self.cross_attn = CrossAttention(channels, text_dim, head_dim) if cross_attn else None
        self.ff = FeedForward(channels, ff_mult)

    def forward(self, x: torch.Tensor, frames: int, text) -> torch.Tensor:
        n, c, h, w = x.shape
        tok = x.reshape(n, c, h * w).transpose(1, 2)  # (B*T, HW, C)
        if self.self_attn is not None:
            tok = self.self_attn(tok)
        if self.cross_attn is not None:
            tokens, mask = text
            if tokens.shape[0] == n:  # per-frame text
                tok = self.cross_attn(tok, tokens, mask)
            else:  # one text per sample: all frames' pixels query it at once (no K/V repeat)
                b = tokens.shape[0]
                tok = self.cross_attn(tok.reshape(b, frames * h * w, c), tokens, mask).reshape(n, h * w, c)
        tok = self.ff(tok)
        return tok.transpose(1, 2).reshape(n, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
