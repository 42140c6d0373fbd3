"""Phenaki's text-to-token model (spec §3.2): a bidirectional masked transformer (MaskGIT) over the
C-ViViT token grid, conditioned on the frozen text encoder's token embeddings by cross-attention.

* Training: each item masks a fraction ``gamma(r) = cos(pi r / 2)`` of its tokens (``r ~ U[0, 1)``,
  at least one token) and is scored by the cross-entropy of the masked ones; the text is dropped
  for a fraction of items (classifier-free guidance); *given* tokens (the re-encoded frames a
  continuation starts from) are never masked and never scored.
* Sampling (:func:`sample_tokens`): start with every unknown token masked; at each of ``steps``
  iterations predict all of them (classifier-free guidance on the logits,
  ``(1 + w) * cond - w * uncond``, ``w = 0`` = the conditional logits), draw a token for each
  with a seeded generator at ``temperature``, keep the most confident ones and re-mask the rest,
  so that the masked count follows the cosine schedule to 0. Confidence gets annealed Gumbel noise
  (MaskGIT's ``choice_temperature``), seeded too: same seed, same tokens.

Positions: a learned embedding of the token's place in its ``g x g`` grid plus fixed sinusoidal
features of its token step, so one model runs on any number of steps (any clip length).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CrossAttention, FeedForward, LayerNorm32, SelfAttention, sinusoidal_embedding
from .text import TextEmbedding

__all__ = ["MaskGIT", "MaskGITConfig", "guided_logits", "mask_schedule", "masking_loss", "sample_tokens"]


def mask_schedule(r: torch.Tensor | float) -> torch.Tensor:
    """MaskGIT's cosine schedule: the fraction of tokens masked at progress ``r`` in [0, 1]."""
    return torch.cos(torch.as_tensor(r, dtype=torch.float32) * (math.pi / 2))


@dataclass(frozen=True)
class MaskGITConfig:
    codebook_size: int  # the tokenizer's (CViViTConfig.codebook_size)
    grid: int  # tokens per side of one token step (CViViTConfig.grid)
    dim: int = 256
    depth: int = 6
    head_dim: int = 32
    ff_mult: int = 4
    text_dim: int = 384
    text_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.codebook_size < 2 or self.grid < 1:
            raise ValueError(f"MaskGITConfig: codebook_size >= 2 and grid >= 1; received {self.codebook_size}, {self.grid}.")
        if self.dim % self.head_dim or self.depth < 1 or self.text_dim < 1:
            raise ValueError(
                f"MaskGITConfig: dim ({self.dim}) must be a multiple of head_dim ({self.head_dim}); depth, text_dim >= 1."
            )
        if not 0.0 <= self.text_dropout < 1.0:
            raise ValueError(f"MaskGITConfig: text_dropout must be in [0, 1); received {self.text_dropout}.")

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MaskGITConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"MaskGITConfig has unknown fields {unknown}: the file was written by a newer version; update the pack."
            )
        return cls(**d)


class _Block(nn.Module):
    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        self.attn = SelfAttention(cfg.dim, cfg.head_dim)
        self.cross = CrossAttention(cfg.dim, cfg.text_dim, cfg.head_dim)
        self.ff = FeedForward(cfg.dim, cfg.ff_mult)

    def forward(self, x, text_tokens, text_mask):
        return self.ff(self.cross(self.attn(x), text_tokens, text_mask))


class MaskGIT(nn.Module):
    """``forward(ids (B, S, g, g), text) -> logits (B, S, g, g, codebook_size)``; ``ids`` holds
    token indices or :attr:`MaskGITConfig.mask_id` where a token is masked."""

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.config = cfg = config
        self.embed = nn.Embedding(cfg.codebook_size + 1, cfg.dim)
        self.grid_pos = nn.Parameter(torch.randn(cfg.grid * cfg.grid, cfg.dim) * 0.02)
        self.step_pos = nn.Linear(cfg.dim, cfg.dim)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = LayerNorm32(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.codebook_size)

    def _check(self, ids: torch.Tensor) -> None:
        g = self.config.grid
        if ids.ndim != 4 or tuple(ids.shape[-2:]) != (g, g):
            raise ValueError(f"MaskGIT takes token ids (B, S, {g}, {g}); received {tuple(ids.shape)}.")
        if ids.min() < 0 or ids.max() > self.config.mask_id:
            raise ValueError(f"Token ids must be in [0, {self.config.codebook_size}] ({self.config.mask_id} = masked).")

    def forward(self, ids: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        self._check(ids)
        cfg = self.config
        b, s, g = ids.shape[0], ids.shape[1], cfg.grid
        if text.batch != b:
            raise ValueError(f"Text batch {text.batch} must equal the token batch {b}.")
        if text.width != cfg.text_dim:
            raise ValueError(
                f"This model was trained with {cfg.text_dim}-wide text embeddings but received {text.width}-wide "
                "ones: use the text encoder it was trained with."
            )
        x = self.embed(ids.reshape(b, s, g * g))
        steps = sinusoidal_embedding(torch.arange(s, device=ids.device, dtype=torch.float32), cfg.dim)
        x = x + self.grid_pos[None, None] + self.step_pos(steps.to(x.dtype))[None, :, None]
        x = x.reshape(b, s * g * g, cfg.dim)
        tt, tm = text.tokens.to(x.device, x.dtype), text.mask.to(x.device)
        for blk in self.blocks:
            x = blk(x, tt, tm)
        return self.head(self.norm(x)).float().reshape(b, s, g, g, cfg.codebook_size)


def _drop_text(text: TextEmbedding, keep: torch.Tensor) -> TextEmbedding:
    """Text with the rows where ``keep`` is False made unconditional (no visible tokens)."""
    return TextEmbedding(text.tokens, text.mask & keep[:, None].to(text.mask.device), text.pooled, text.encoder_id)


def masking_loss(
    model: MaskGIT,
    ids: torch.Tensor,
    text: TextEmbedding,
    *,
    generator: torch.Generator | None = None,
    given: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of a random cosine-schedule masking of ``ids`` (B, S, g, g); ``given`` (same
    shape, bool) marks tokens that stay visible and are not scored (continuation items)."""
    b = ids.shape[0]
    dev = ids.device
    flat = ids.reshape(b, -1)
    n = flat.shape[1]
    free = torch.ones_like(flat, dtype=torch.bool) if given is None else ~given.reshape(b, -1).to(dev)
    n_free = free.sum(1)
    if bool((n_free == 0).any()):
        raise ValueError("Every item needs at least one token that is not given.")
    gdev = generator.device if generator is not None else dev  # drawn where the generator lives, then moved
    r = torch.rand(b, generator=generator, device=gdev).to(dev)
    n_mask = torch.maximum(torch.ceil(mask_schedule(r).to(dev) * n_free).long(), torch.ones_like(n_free))
    scores = torch.rand(b, n, generator=generator, device=gdev).to(dev).masked_fill(~free, 2.0)  # given: never picked
    rank = scores.argsort(dim=1).argsort(dim=1)
    masked = rank < n_mask[:, None]
    inp = flat.masked_fill(masked, model.config.mask_id).reshape(ids.shape)
    keep = torch.rand(b, generator=generator, device=gdev).to(dev) >= model.config.text_dropout
    logits = model(inp, _drop_text(text, keep) if model.training else text).reshape(b, n, -1)
    loss = F.cross_entropy(logits[masked], flat[masked])
    acc = (logits[masked].argmax(-1) == flat[masked]).float().mean()
    return loss, {"ce": float(loss.detach()), "masked_acc": float(acc), "mask_fraction": float(masked.float().mean())}


def guided_logits(model: Callable, ids: torch.Tensor, text: TextEmbedding, w: float) -> torch.Tensor:
    """Classifier-free guidance on the logits: ``(1 + w) * cond - w * uncond`` (the library's
    convention: ``w = 0`` is the conditional model alone, in one evaluation)."""
    cond = model(ids, text)
    if w == 0:
        return cond
    null = TextEmbedding.null(ids.shape[0], text.width, device=ids.device)
    return (1 + w) * cond - w * model(ids, null)


@torch.no_grad()
def sample_tokens(
    model: MaskGIT,
    text: TextEmbedding,
    steps_tokens: int,
    *,
    steps: int = 12,
    w: float = 0.0,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    seed: int = 0,
    given: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Token ids ``(B, steps_tokens, g, g)`` for ``text`` by iterative confidence-based
    unmasking. ``given``: ids with ``-1`` where unknown (the tokens of re-encoded context frames
    are kept as they are). ``callback(i, ids)`` after each iteration (progress, previews, Cancel)."""
    cfg = model.config
    if steps < 1 or temperature <= 0 or choice_temperature < 0:
        raise ValueError("sample_tokens needs steps >= 1, temperature > 0 and choice_temperature >= 0.")
    b, g = text.batch, cfg.grid
    dev = next(model.parameters()).device
    shape = (b, steps_tokens, g, g)
    if given is None:
        ids = torch.full(shape, cfg.mask_id, dtype=torch.long, device=dev)
    else:
        if tuple(given.shape) != shape:
            raise ValueError(f"given must be (B, S, g, g) = {shape}; received {tuple(given.shape)}.")
        if given.max() >= cfg.codebook_size or given.min() < -1:
            raise ValueError(f"given holds token ids in [0, {cfg.codebook_size}) or -1 (unknown).")
        ids = torch.where(given.to(dev) < 0, cfg.mask_id, given.to(dev)).long()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    n_unknown = (ids == cfg.mask_id).reshape(b, -1).sum(1)  # per item
    text = text.to(dev)
    for i in range(steps):
        unknown = (ids == cfg.mask_id).reshape(b, -1)
        if not bool(unknown.any()):
            break
        logits = guided_logits(model, ids, text, w).reshape(b, -1, cfg.codebook_size) / temperature
        probs = logits.float().softmax(-1)
        drawn = torch.multinomial(probs.reshape(-1, cfg.codebook_size).cpu(), 1, generator=gen).reshape(b, -1).to(dev)
        conf = probs.gather(-1, drawn[..., None])[..., 0].clamp_min(1e-30).log()
        ratio = (i + 1) / steps
        if choice_temperature > 0:  # annealed Gumbel noise on the confidence (MaskGIT)
            u = torch.rand(conf.shape, generator=gen).clamp(1e-20, 1 - 1e-7).to(dev)
            conf = conf + choice_temperature * (1 - ratio) * -torch.log(-torch.log(u))
        conf = conf.masked_fill(~unknown, float("inf"))
        still_masked = torch.floor(mask_schedule(ratio) * n_unknown).long() if i + 1 < steps else torch.zeros_like(n_unknown)
        still_masked = torch.minimum(still_masked, unknown.sum(1) - 1).clamp_min(0)
        rank = conf.argsort(dim=1).argsort(dim=1)  # 0 = least confident
        remask = rank < still_masked[:, None]
        flat = torch.where(unknown, drawn, ids.reshape(b, -1))
        ids = flat.masked_fill(remask & unknown, cfg.mask_id).reshape(shape)
        if callback is not None:
            callback(i, ids)
    return ids
