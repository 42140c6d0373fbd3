"""Phenaki's C-ViViT video tokenizer (spec §3.1): a ViT encoder-decoder over video patches that is
causal in time, with a discrete bottleneck.

* The first frame is cut into ``p x p`` image patches, every later group of ``t_p`` frames into
  ``t_p x p x p`` tubelets; each is linearly embedded (separate projections). A video of
  ``1 + n * t_p`` frames becomes ``1 + n`` *token steps* of ``(H/p) x (W/p)`` tokens; an image
  (one frame) is one step.
* Encoder: a spatial transformer (attention among the tokens of one step), then a temporal
  transformer whose attention is **causal** (each position sees its own and earlier steps), with a
  learned relative-position bias, so any number of steps works.
* Quantiser: finite scalar quantisation (FSQ, Mentzer et al. 2023): each token's low-dimensional
  projection is bounded with ``tanh`` and rounded per channel to one of ``L_i`` levels (odd
  ``L_i``), with straight-through gradients; the code index is the mixed-radix number of the
  levels. No codebook, so no codebook or commitment loss and no dead codes; the loss is the
  reconstruction alone. Phenaki itself used a ViT-VQGAN codebook: ``quantiser="vq"`` is that
  (l2-normalised codes looked up by cosine similarity, codebook and commitment losses), so the
  two can be compared (``benchmarks/quantiser.py``).
* Decoder: the mirror (temporal transformer, causal, then spatial transformer), and linear
  projections back to pixels, the first frame with its own.

Because every layer that mixes time is causal, the tokens of the first ``k`` steps depend only
on the first ``1 + (k - 1) * t_p`` frames, and so do the decoded frames of those steps: the tail
of a generated clip can be re-encoded and continued (spec §3.3). Videos are ``(B, 3, T, H, W)``
in ``[-1, 1]``, as everywhere in the library.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FeedForward, LayerNorm32, attention, relative_position_buckets, zero_init

__all__ = ["CViViT", "CViViTConfig", "FSQ", "VQ", "reconstruction_loss"]


@dataclass(frozen=True)
class CViViTConfig:
    image_size: int = 32  # frames are image_size x image_size
    channels: int = 3
    patch_size: int = 4  # p: spatial patch (and tubelet) side
    temporal_patch: int = 2  # t_p: frames per tubelet after the first frame
    dim: int = 128
    spatial_depth: int = 2  # transformer blocks, encoder and decoder each
    temporal_depth: int = 2
    head_dim: int = 32
    ff_mult: int = 4
    fsq_levels: tuple[int, ...] = (7, 5, 5, 5)  # 875 codes
    rel_pos_buckets: int = 32
    rel_pos_max_distance: int = 64
    quantiser: str = "fsq"  # "fsq" (levels above) or "vq" (a learned codebook, Phenaki's ViT-VQGAN kind)
    vq_codes: int = 1024  # vq: codebook entries
    vq_dim: int = 8  # vq: code dimension (l2-normalised)
    vq_beta: float = 0.25  # vq: commitment weight

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsq_levels", tuple(int(v) for v in self.fsq_levels))
        if self.image_size < 1 or self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(
                f"CViViTConfig: image_size ({self.image_size}) must be a positive multiple of patch_size ({self.patch_size})."
            )
        if self.temporal_patch < 1 or self.channels < 1:
            raise ValueError("CViViTConfig: temporal_patch and channels must be >= 1.")
        if self.dim < 1 or self.head_dim < 1 or self.dim % self.head_dim:
            raise ValueError(f"CViViTConfig: dim ({self.dim}) must be a multiple of head_dim ({self.head_dim}).")
        if self.spatial_depth < 1 or self.temporal_depth < 1:
            raise ValueError("CViViTConfig: spatial_depth and temporal_depth must be >= 1.")
        if not self.fsq_levels or any(v < 3 or v % 2 == 0 for v in self.fsq_levels):
            raise ValueError(f"CViViTConfig: fsq_levels must be odd numbers >= 3; received {self.fsq_levels}.")
        if self.quantiser not in ("fsq", "vq"):
            raise ValueError(f"CViViTConfig: quantiser must be 'fsq' or 'vq'; received {self.quantiser!r}.")
        if self.vq_codes < 2 or self.vq_dim < 1 or self.vq_beta < 0:
            raise ValueError("CViViTConfig: need vq_codes >= 2, vq_dim >= 1 and vq_beta >= 0.")

    @property
    def grid(self) -> int:
        """Tokens per side of one token step."""
        return self.image_size // self.patch_size

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels) if self.quantiser == "fsq" else self.vq_codes

    @property
    def code_dim(self) -> int:
        """Channels of a token's code (the quantiser's input)."""
        return len(self.fsq_levels) if self.quantiser == "fsq" else self.vq_dim

    def steps(self, frames: int) -> int:
        """Token steps of a ``frames``-frame video (which must be ``1 + n * temporal_patch``)."""
        if frames < 1 or (frames - 1) % self.temporal_patch:
            raise ValueError(
                f"C-ViViT takes 1 + n * {self.temporal_patch} frames (1, {1 + self.temporal_patch}, "
                f"{1 + 2 * self.temporal_patch}, ...); received {frames}."
            )
        return 1 + (frames - 1) // self.temporal_patch

    def frames(self, steps: int) -> int:
        return 1 + (steps - 1) * self.temporal_patch

    def tokens(self, frames: int) -> int:
        """Tokens of a ``frames``-frame video."""
        return self.steps(frames) * self.grid**2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fsq_levels"] = list(self.fsq_levels)
        if self.quantiser == "fsq":  # an FSQ tokenizer's configuration (and so its id) as before VQ existed
            for k in ("quantiser", "vq_codes", "vq_dim", "vq_beta"):
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CViViTConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"CViViTConfig has unknown fields {unknown}: the file was written by a newer version; update the pack."
            )
        return cls(**d)


class FSQ(nn.Module):
    """Finite scalar quantisation with odd level counts: ``(..., len(levels))`` real values ->
    the nearest grid point of ``prod(levels)`` (values in ``[-1, 1]``, straight-through gradient)
    and its code index."""

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.long)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("half_width", (lv - 1) // 2, persistent=False)
        radix = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), lv[:-1]]), 0)
        self.register_buffer("radix", radix, persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.half_width.to(z.dtype)
        bounded = torch.tanh(z.float()).to(z.dtype) * half
        q = bounded + (torch.round(bounded) - bounded).detach()  # straight-through rounding
        return q / half, self.indices(torch.round(bounded))

    def indices(self, q_int: torch.Tensor) -> torch.Tensor:
        return ((q_int.long() + self.half_width) * self.radix).sum(-1)

    def codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Code index -> grid point in ``[-1, 1]`` (the inverse of :meth:`forward`'s index)."""
        if (indices < 0).any() or (indices >= int(self.levels.prod())).any():
            raise ValueError(f"Token indices must be in [0, {int(self.levels.prod())}).")
        digits = (indices.long()[..., None] // self.radix) % self.levels
        return (digits - self.half_width).float() / self.half_width.float()


class VQ(nn.Module):
    """A learned codebook as in ViT-VQGAN: latents and codes are l2-normalised and a latent takes
    its most similar code; straight-through gradients, with the codebook loss (codes move to the
    latents) and ``beta`` times the commitment loss (latents stay near their codes) kept in
    :attr:`loss` after each forward pass."""

    def __init__(self, codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.codebook = nn.Embedding(codes, dim)
        nn.init.normal_(self.codebook.weight)
        self.beta = beta
        self.loss = torch.zeros(())

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zn = F.normalize(z.float(), dim=-1)
        cb = F.normalize(self.codebook.weight.float(), dim=-1)
        idx = (zn @ cb.t()).argmax(-1)
        q = cb[idx]
        self.loss = F.mse_loss(q, zn.detach()) + self.beta * F.mse_loss(zn, q.detach())
        return (zn + (q - zn).detach()).to(z.dtype), idx

    def codes(self, indices: torch.Tensor) -> torch.Tensor:
        n = self.codebook.num_embeddings
        if (indices < 0).any() or (indices >= n).any():
            raise ValueError(f"Token indices must be in [0, {n}).")
        return F.normalize(self.codebook.weight.float(), dim=-1)[indices.long()]


class _Block(nn.Module):
    """Pre-norm self-attention (optionally causal, with a relative-position bias) + feed-forward."""

    def __init__(self, dim: int, head_dim: int, ff_mult: int, rel_bias: tuple[int, int] | None = None):
        super().__init__()
        self.heads = dim // head_dim
        self.norm = LayerNorm32(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = zero_init(nn.Linear(dim, dim))
        self.ff = FeedForward(dim, ff_mult)
        self.rel = None
        if rel_bias is not None:
            self.num_buckets, self.max_distance = rel_bias
            self.rel = nn.Embedding(self.num_buckets, self.heads)

    def forward(self, tok: torch.Tensor, causal: bool = False) -> torch.Tensor:
        n, length, c = tok.shape
        q, k, v = self.qkv(self.norm(tok)).reshape(n, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mask = None
        if self.rel is not None:
            pos = torch.arange(length, device=tok.device)
            rel = pos[None, :] - pos[:, None]  # key - query
            mask = self.rel(relative_position_buckets(rel, self.num_buckets, self.max_distance)).permute(2, 0, 1)[None]
            if causal:
                mask = mask.masked_fill(rel[None, None] > 0, float("-inf"))
        elif causal:
            mask = torch.ones(length, length, dtype=torch.bool, device=tok.device).tril()
        o = attention(q, k, v, mask).transpose(1, 2).reshape(n, length, c)
        return self.ff(tok + self.out(o))


class CViViT(nn.Module):
    """Encoder, FSQ bottleneck and decoder. ``tokenize(video) -> (B, S, g, g)`` code indices;
    ``detokenize(indices) -> video``; ``forward(video) -> (reconstruction, indices)``."""

    def __init__(self, config: CViViTConfig):
        super().__init__()
        self.config = cfg = config
        c, p, tp, d = cfg.channels, cfg.patch_size, cfg.temporal_patch, cfg.dim
        n_pos = cfg.grid**2
        self.first_in = nn.Linear(c * p * p, d)
        self.tube_in = nn.Linear(c * tp * p * p, d)
        self.enc_pos = nn.Parameter(torch.randn(n_pos, d) * 0.02)
        rel = (cfg.rel_pos_buckets, cfg.rel_pos_max_distance)
        self.enc_spatial = nn.ModuleList(_Block(d, cfg.head_dim, cfg.ff_mult) for _ in range(cfg.spatial_depth))
        self.enc_temporal = nn.ModuleList(_Block(d, cfg.head_dim, cfg.ff_mult, rel) for _ in range(cfg.temporal_depth))
        self.enc_norm = LayerNorm32(d)
        self.to_code = nn.Linear(d, cfg.code_dim)
        self.quantiser = FSQ(cfg.fsq_levels) if cfg.quantiser == "fsq" else VQ(cfg.vq_codes, cfg.vq_dim, cfg.vq_beta)
        self.from_code = nn.Linear(cfg.code_dim, d)
        self.dec_pos = nn.Parameter(torch.randn(n_pos, d) * 0.02)
        self.dec_temporal = nn.ModuleList(_Block(d, cfg.head_dim, cfg.ff_mult, rel) for _ in range(cfg.temporal_depth))
        self.dec_spatial = nn.ModuleList(_Block(d, cfg.head_dim, cfg.ff_mult) for _ in range(cfg.spatial_depth))
        self.dec_norm = LayerNorm32(d)
        self.first_out = nn.Linear(d, c * p * p)
        self.tube_out = nn.Linear(d, c * tp * p * p)

    # -- patches --------------------------------------------------------------------------------

    def _check(self, video: torch.Tensor) -> int:
        cfg = self.config
        if video.ndim != 5 or video.shape[1] != cfg.channels or tuple(video.shape[-2:]) != (cfg.image_size,) * 2:
            raise ValueError(
                f"C-ViViT takes videos (B, {cfg.channels}, T, {cfg.image_size}, {cfg.image_size}); received {tuple(video.shape)}."
            )
        return cfg.steps(video.shape[2])

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> embedded patches ``(B, S, g*g, dim)``."""
        cfg = self.config
        s = self._check(video)
        b, c, _, _, _ = video.shape
        p, tp, g = cfg.patch_size, cfg.temporal_patch, cfg.grid
        x = video.to(self.first_in.weight.dtype)
        first = x[:, :, 0].reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, 1, g * g, c * p * p)
        steps = [self.first_in(first)]
        if s > 1:
            rest = x[:, :, 1:].reshape(b, c, s - 1, tp, g, p, g, p)
            rest = rest.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, s - 1, g * g, c * tp * p * p)
            steps.append(self.tube_in(rest))
        return torch.cat(steps, dim=1)

    def unpatchify(self, tok: torch.Tensor) -> torch.Tensor:
        """``(B, S, g*g, dim)`` -> ``(B, C, 1 + (S-1)*t_p, H, W)``."""
        cfg = self.config
        b, s = tok.shape[:2]
        c, p, tp, g = cfg.channels, cfg.patch_size, cfg.temporal_patch, cfg.grid
        first = self.first_out(tok[:, :1]).reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, 1, g * p, g * p)
        if s == 1:
            return first
        rest = self.tube_out(tok[:, 1:]).reshape(b, s - 1, g, g, c, tp, p, p)
        rest = rest.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, c, (s - 1) * tp, g * p, g * p)
        return torch.cat([first, rest], dim=2)

    # -- transformer stacks ---------------------------------------------------------------------

    @staticmethod
    def _spatial(blocks, tok: torch.Tensor) -> torch.Tensor:
        b, s, n, d = tok.shape
        x = tok.reshape(b * s, n, d)
        for blk in blocks:
            x = blk(x)
        return x.reshape(b, s, n, d)

    @staticmethod
    def _temporal(blocks, tok: torch.Tensor) -> torch.Tensor:
        b, s, n, d = tok.shape
        x = tok.transpose(1, 2).reshape(b * n, s, d)
        for blk in blocks:
            x = blk(x, causal=True)
        return x.reshape(b, n, s, d).transpose(1, 2)

    # -- public ---------------------------------------------------------------------------------

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latents ``(B, S, g, g, code_dim)``."""
        tok = self.patchify(video) + self.enc_pos
        tok = self._temporal(self.enc_temporal, self._spatial(self.enc_spatial, tok))
        z = self.to_code(self.enc_norm(tok))
        g = self.config.grid
        return z.reshape(z.shape[0], z.shape[1], g, g, -1)

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents -> (codes: FSQ grid points in [-1, 1] or VQ codebook entries, code indices ``(B, S, g, g)``)."""
        return self.quantiser(z)

    @property
    def quantiser_loss(self) -> torch.Tensor | None:
        """The VQ codebook + commitment loss of the last forward pass (``None`` for FSQ, which has none)."""
        return getattr(self.quantiser, "loss", None)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, S, g, g, code_dim)`` -> video ``(B, C, T, H, W)``."""
        b, s, g = codes.shape[0], codes.shape[1], self.config.grid
        tok = self.from_code(codes.reshape(b, s, g * g, -1).to(self.from_code.weight.dtype)) + self.dec_pos
        tok = self._spatial(self.dec_spatial, self._temporal(self.dec_temporal, tok))
        return self.unpatchify(self.dec_norm(tok)).float()

    @torch.no_grad()
    def tokenize(self, video: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, S, g, g)`` of a video."""
        return self.quantise(self.encode(video))[1]

    @torch.no_grad()
    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """Video ``(B, C, 1 + (S-1)*t_p, H, W)`` of code indices ``(B, S, g, g)``."""
        g = self.config.grid
        if indices.ndim != 4 or tuple(indices.shape[-2:]) != (g, g):
            raise ValueError(f"Token indices must be (B, S, {g}, {g}); received {tuple(indices.shape)}.")
        return self.decode(self.quantiser.codes(indices).to(self.from_code.weight.device))

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, indices)``; the reconstruction carries straight-through gradients."""
        codes, idx = self.quantise(self.encode(video))
        return self.decode(codes), idx

    def loss(self, video: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Training loss: :func:`reconstruction_loss` of the forward pass."""
        recon, idx = self(video)
        return reconstruction_loss(recon, idx, video, self.quantiser_loss)


def reconstruction_loss(
    recon: torch.Tensor, indices: torch.Tensor, video: torch.Tensor, quantiser_loss: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """The reconstruction's MSE plus the quantiser's own loss (VQ's codebook and commitment terms;
    FSQ has none), and the codes used."""
    mse = F.mse_loss(recon, video.float())
    stats = {"mse": float(mse.detach()), "codes_used": int(indices.unique().numel())}
    if quantiser_loss is None:
        return mse, stats
    return mse + quantiser_loss, {**stats, "vq_loss": float(quantiser_loss.detach())}
