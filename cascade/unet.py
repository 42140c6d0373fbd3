"""The Video U-Net: one configurable network for the base, SSR and TSR stages (spec §2.5).

Input ``z (B, in_channels, T, H, W)`` plus optional conditioning channels ``cond (B, cond_channels,
T, H, W)`` (SSR: upsampled low-res video; TSR: repeated frames + known-frame mask; base with
continuation: known frames + mask). Output: the v prediction ``(B, out_channels, T, H, W)``.
Frame count is free (relative position bias, no temporal down-sampling); H and W must be
multiples of ``config.size_multiple``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import UNetConfig
from .layers import (
    AttentionPool,
    Downsample,
    GroupNorm32,
    LayerNorm32,
    ResBlock,
    SpatialTransformer,
    TemporalAttention,
    TemporalConv,
    Upsample,
    sinusoidal_embedding,
    zero_init,
)
from .schedule import alpha_sigma
from .text import TextEmbedding

__all__ = ["VideoUNet"]


class _ScalarEmbedding(nn.Module):
    """Sinusoidal features of a scalar (log-SNR, augmentation level, guidance weight) -> MLP."""

    def __init__(self, dim: int, scale: float, shift: float = 0.0):
        super().__init__()
        self.scale, self.shift = scale, shift
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.dim = dim

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        feats = sinusoidal_embedding((v.float() + self.shift) * self.scale, self.dim)
        return self.mlp(feats.to(self.mlp[0].weight.dtype)).float()


class _Layer(nn.Module):
    """ResBlock -> temporal conv -> per-frame spatial/cross attention -> temporal attention."""

    def __init__(self, cfg: UNetConfig, cin: int, cout: int, level: int):
        super().__init__()
        self.res = ResBlock(cin, cout, cfg.embedding_dim, cfg.norm_groups, cfg.dropout)
        self.tconv = TemporalConv(cout, cfg.norm_groups) if cfg.temporal_conv else None
        sa, ca = cfg.spatial_attn[level], cfg.cross_attn[level]
        self.spatial = SpatialTransformer(cout, cfg.head_dim, cfg.text_dim, sa, ca, cfg.ff_mult) if (sa or ca) else None
        self.tattn = (
            TemporalAttention(cout, cfg.head_dim, cfg.rel_pos_buckets, cfg.rel_pos_max_distance)
            if cfg.temporal_attn[level]
            else None
        )

    def forward(self, x, emb, frames, text, video_mask):
        x = self.res(x, emb)
        if self.tconv is not None:
            x = self.tconv(x, frames, video_mask)
        if self.spatial is not None:
            x = self.spatial(x, frames, text)
        if self.tattn is not None:
            x = self.tattn(x, frames, video_mask)
        return x


class VideoUNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        ch, e = cfg.channels, cfg.embedding_dim
        self.gradient_checkpointing = False

        self.logsnr_emb = _ScalarEmbedding(e, scale=25.0, shift=20.0)  # logsnr in [-20, 20] -> [0, 1000]
        self.aug_emb = _ScalarEmbedding(e, scale=25.0, shift=20.0) if cfg.aug_cond else None
        self.guidance_emb = _ScalarEmbedding(e, scale=50.0) if cfg.guidance_cond else None
        self.frame_emb = _ScalarEmbedding(e, scale=1000.0) if cfg.frame_phase else None  # phase [0, 1] -> [0, 1000]
        if self.frame_emb is not None:
            zero_init(self.frame_emb.mlp[-1])  # starts as a no-op: a fine-tune of a stage without it begins unchanged
        if cfg.text_dim:
            self.text_pool = nn.Sequential(LayerNorm32(cfg.text_dim), nn.Linear(cfg.text_dim, e), nn.SiLU(), nn.Linear(e, e))
            self.null_pooled = nn.Parameter(torch.zeros(e))
        self.attn_pool = AttentionPool(cfg.text_dim, e, cfg.text_attn_pool) if cfg.text_attn_pool else None

        p2 = cfg.patch_size**2
        self.conv_in = nn.Conv2d((cfg.in_channels + cfg.cond_channels) * p2, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = ch[0]
        for lvl, cl in enumerate(ch):
            layers = nn.ModuleList()
            for _ in range(cfg.num_res_blocks[lvl]):
                layers.append(_Layer(cfg, c, cl, lvl))
                c = cl
            self.down.append(layers)
            self.downsample.append(Downsample(c) if lvl < len(ch) - 1 else nn.Identity())
        self.mid = nn.ModuleList([_Layer(cfg, c, c, len(ch) - 1), _Layer(cfg, c, c, len(ch) - 1)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(len(ch))):
            cl = ch[lvl]
            layers = nn.ModuleList()
            for i in range(cfg.num_res_blocks[lvl]):
                layers.append(_Layer(cfg, (c + cl) if i == 0 else cl, cl, lvl))  # skip joins at the first block
                c = cl
            self.up.append(layers)
            self.upsample.append(Upsample(c) if lvl > 0 else nn.Identity())
        self.norm_out = GroupNorm32(cfg.norm_groups, c)
        self.conv_out = zero_init(nn.Conv2d(c, cfg.out_channels * p2, 3, padding=1))

    # -- conditioning -----------------------------------------------------------------------------

    def _per_frame(self, v: torch.Tensor, b: int, frames: int, what: str, device=None) -> torch.Tensor:
        # on the input's device (a low-VRAM run keeps the weights elsewhere between their calls)
        v = torch.as_tensor(v, device=device if device is not None else self.conv_in.weight.device).float()
        if v.ndim == 0:
            return v.expand(b * frames)
        if v.shape == (b,):
            return v.repeat_interleave(frames)
        if v.shape == (b, frames):
            return v.reshape(-1)
        raise ValueError(f"{what} must be a scalar, (B,) or (B, T) = ({b}, {frames}); received shape {tuple(v.shape)}.")

    def embed(self, b, frames, logsnr, text, aug_logsnr, guidance, video_mask=None, device=None):
        """Per-frame conditioning vector ``(B*T, E)`` (SiLU applied) and the text context."""
        e = self.logsnr_emb(self._per_frame(logsnr, b, frames, "logsnr", device))
        cfg = self.config
        if self.frame_emb is not None and frames > 1:
            phase = torch.arange(frames, device=e.device, dtype=torch.float32) / (frames - 1)
            fe = self.frame_emb(phase).repeat(b, 1)  # (B*T, E): items are frame-major blocks
            if video_mask is not None:  # packed images are independent frames: no phase
                fe = fe * video_mask.to(fe.dtype).repeat_interleave(frames)[:, None]
            e = e + fe
        if cfg.aug_cond:
            if aug_logsnr is None:
                raise ValueError("This stage is conditioned on a noise-augmentation level: pass aug_logsnr.")
            e = e + self.aug_emb(self._per_frame(aug_logsnr, b, frames, "aug_logsnr", device))
        if cfg.guidance_cond:
            if guidance is None:
                raise ValueError("This guided-distilled student needs the guidance weight: pass guidance (w).")
            e = e + self.guidance_emb(self._per_frame(guidance, b, frames, "guidance", device))
        ctx = None
        if cfg.text_dim:
            if text is None:
                text = TextEmbedding.null(b, cfg.text_dim, device=e.device)
            if text.width != cfg.text_dim:
                raise ValueError(
                    f"This model was trained with {cfg.text_dim}-wide text embeddings but received "
                    f"{text.width}-wide ones: use the text encoder the stage was trained with."
                )
            if text.batch not in (b, b * frames):
                raise ValueError(f"Text batch {text.batch} must equal the video batch {b} (or B*T = {b * frames}).")
            dt = self.conv_in.weight.dtype
            pooled = self.text_pool(text.pooled.to(e.device, dt)).float()
            if self.attn_pool is not None:
                pooled = pooled + self.attn_pool(text.tokens.to(e.device, dt), text.mask.to(e.device))
            pooled = torch.where(text.is_null.to(e.device)[:, None], self.null_pooled.float()[None], pooled)
            e = e + (pooled.repeat_interleave(frames, 0) if text.batch == b else pooled)
            ctx = (text.tokens.to(e.device, dt), text.mask.to(e.device))
        return F.silu(e).to(self.conv_in.weight.dtype), ctx

    # -- forward ----------------------------------------------------------------------------------

    def forward(
        self,
        z: torch.Tensor,
        logsnr: torch.Tensor,
        *,
        text: TextEmbedding | None = None,
        cond: torch.Tensor | None = None,
        aug_logsnr: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``z`` (B, C, T, H, W) -> v (B, out_channels, T, H, W). ``video_mask`` (B,): 1 = video,
        0 = packed independent images (temporal layers off). ``logsnr`` etc. are (B,) or (B, T)."""
        cfg = self.config
        self._check_inputs(z, cond)
        b, _, frames, h, w = z.shape
        dt = self.conv_in.weight.dtype
        vm = None if video_mask is None else torch.as_tensor(video_mask, device=z.device)
        emb, ctx = self.embed(b, frames, logsnr, text, aug_logsnr, guidance, vm, device=z.device)
        skip = None
        if cfg.cond_skip:  # see UNetConfig.cond_skip: the network works on the residual
            base = cond[:, : cfg.out_channels].float()
            if cfg.aug_cond:
                base = base * self._frame_scalar(aug_logsnr, b, frames, z.device, alpha_sigma)[0]
            a, s = self._frame_scalar(logsnr, b, frames, z.device, alpha_sigma)
            z = z - (a * base).to(z.dtype)
            skip = s * base
        x = z if cond is None else torch.cat([z, cond.to(z)], dim=1)
        x = x.to(dt).transpose(1, 2).reshape(b * frames, -1, h, w)  # (B*T, C, H, W)
        if cfg.patch_size > 1:
            x = F.pixel_unshuffle(x, cfg.patch_size)

        x = self.conv_in(x)
        skips = []
        for layers, down in zip(self.down, self.downsample):
            for layer in layers:
                x = self._run(layer, x, emb, frames, ctx, vm)
            skips.append(x)
            x = down(x)
        for layer in self.mid:
            x = self._run(layer, x, emb, frames, ctx, vm)
        for layers, up in zip(self.up, self.upsample):
            x = torch.cat([x, skips.pop()], dim=1)
            for layer in layers:
                x = self._run(layer, x, emb, frames, ctx, vm)
            x = up(x)
        x = self.conv_out(F.silu(self.norm_out(x)))
        if cfg.patch_size > 1:
            x = F.pixel_shuffle(x, cfg.patch_size)
        x = x.reshape(b, frames, cfg.out_channels, h, w).transpose(1, 2)
        return x if skip is None else x - skip.to(x.dtype)

    def _frame_scalar(self, v, b, frames, device, fn):
        """``fn`` of a per-sample / per-frame scalar, as ``(B, 1, T, 1, 1)`` tensors."""
        return tuple(t.reshape(b, 1, frames, 1, 1) for t in fn(self._per_frame(v, b, frames, "logsnr", device)))

    def _run(self, layer, x, emb, frames, ctx, vm):
        if self.gradient_checkpointing and self.training:
            return checkpoint(layer, x, emb, frames, ctx, vm, use_reentrant=False)
        return layer(x, emb, frames, ctx, vm)

    def _check_inputs(self, z: torch.Tensor, cond: torch.Tensor | None) -> None:
        cfg = self.config
        if z.ndim != 5 or z.shape[1] != cfg.in_channels:
            raise ValueError(f"The U-Net expects z of shape (B, {cfg.in_channels}, T, H, W); received {tuple(z.shape)}.")
        m = cfg.size_multiple
        if z.shape[-1] % m or z.shape[-2] % m:
            raise ValueError(
                f"Height and width must be multiples of {m} for this network; received {z.shape[-2]}x{z.shape[-1]}. "
                "Resize or pad the frames."
            )
        want = cfg.cond_channels
        got = 0 if cond is None else cond.shape[1]
        if got != want:
            raise ValueError(f"This network takes {want} conditioning channels; received {got}.")
        if cond is not None and (cond.shape[0], *cond.shape[2:]) != (z.shape[0], *z.shape[2:]):
            raise ValueError(f"Conditioning shape {tuple(cond.shape)} does not match the video {tuple(z.shape)}.")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
