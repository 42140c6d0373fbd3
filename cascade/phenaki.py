"""Phenaki as a second base: a C-ViViT tokenizer file and a MaskGIT transformer file that belong
together, text -> video, and continuation from the last frames of a video (spec §3.3).

Files are safetensors with the configuration in the metadata, like the stage files:

* tokenizer: ``format = phenaki-cvivit``, ``config`` (:class:`~cascade.cvivit.CViViTConfig`) and
  ``tokenizer_id``, a hash of its configuration and weights;
* transformer: ``format = phenaki-maskgit``, ``config`` (:class:`~cascade.maskgit.MaskGITConfig`),
  the ``tokenizer_id`` of the tokenizer whose tokens it was trained on, the text encoder, the frame
  rate and the default clip length (token steps).

:func:`load_phenaki` refuses a pair that does not belong together before any generation, with the
reason (another tokenizer, another codebook or grid). Videos are ``(B, 3, T, H, W)`` in ``[-1, 1]``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, atomic_save_safetensors, check_safetensors_file, check_state_dict
from .cvivit import CViViT, CViViTConfig
from .maskgit import MaskGIT, MaskGITConfig, sample_tokens
from .text import TextEmbedding

__all__ = [
    "PHENAKI_FORMAT_VERSION",
    "Phenaki",
    "PhenakiInfo",
    "PhenakiOptions",
    "load_phenaki",
    "load_tokenizer",
    "load_transformer",
    "save_tokenizer",
    "save_transformer",
    "story_frames",
    "tokenizer_id",
]

TOKENIZER_FORMAT = "phenaki-cvivit"
TRANSFORMER_FORMAT = "phenaki-maskgit"
PHENAKI_FORMAT_VERSION = 1


def _hash(config: CViViTConfig, state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_id(model: CViViT) -> str:
    """A short hash of the tokenizer's configuration and weights (as stored in its file): the
    identity a transformer trained on its tokens records."""
    return _hash(model.config, model.state_dict())


@dataclass(frozen=True)
class PhenakiInfo:
    """What a transformer file says besides its network: the tokenizer it belongs to and how to
    use it."""

    tokenizer_id: str
    tokenizer_config: CViViTConfig
    text_encoder: str = ""
    max_tokens: int = 32
    fps: float = 4.0
    steps: int = 9  # default clip length in token steps (17 frames with t_p = 2)


def _meta(path: Path, fmt: str, what: str) -> dict:
    header = check_safetensors_file(path)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != fmt or "config" not in meta:
        found = meta.get("format", "no Phenaki metadata")
        raise CheckpointError(f"{path.name} is not a Phenaki {what} file ({found}); pick the {what} file ('{fmt}').")
    if int(meta.get("format_version", "0")) > PHENAKI_FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} uses Phenaki format {meta['format_version']}; this pack reads up to {PHENAKI_FORMAT_VERSION}."
        )
    return meta


def _load_weights(path: Path, net: torch.nn.Module) -> None:
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except Exception as e:  # safetensors' own error types differ between versions
        raise CheckpointError(f"{path.name}: could not read tensors ({e}). The file is corrupt; re-export it.") from None
    check_state_dict(sd, {k: v.shape for k, v in net.state_dict().items()}, path.name)
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    net.eval().requires_grad_(False)


def save_tokenizer(path: str | os.PathLike, model: CViViT, dtype: torch.dtype | None = None) -> str:
    """Write a tokenizer file; returns its ``tokenizer_id`` (of the weights as stored)."""
    sd = {k: (v.to(dtype) if dtype is not None else v) for k, v in model.state_dict().items()}
    tid = _hash(model.config, sd)
    meta = {
        "format": TOKENIZER_FORMAT,
        "format_version": str(PHENAKI_FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "tokenizer_id": tid,
    }
    atomic_save_safetensors(sd, path, meta)
    return tid


def load_tokenizer(path: str | os.PathLike) -> tuple[CViViT, str]:
    """``(tokenizer, tokenizer_id)``; the id is recomputed from the weights and must match the file's."""
    path = Path(path)
    meta = _meta(path, TOKENIZER_FORMAT, "tokenizer")
    try:
        net = CViViT(CViViTConfig.from_dict(json.loads(meta["config"])))
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name}: invalid tokenizer configuration in metadata: {e}") from None
    _load_weights(path, net)
    tid = tokenizer_id(net)
    if meta.get("tokenizer_id", tid) != tid:
        raise CheckpointError(
            f"{path.name}: its weights do not match its recorded tokenizer id; the file was altered or is corrupt."
        )
    return net, tid


def save_transformer(path: str | os.PathLike, model: MaskGIT, info: PhenakiInfo, dtype: torch.dtype | None = None) -> None:
    meta = {
        "format": TRANSFORMER_FORMAT,
        "format_version": str(PHENAKI_FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "tokenizer_id": info.tokenizer_id,
        "tokenizer_config": json.dumps(info.tokenizer_config.to_dict(), sort_keys=True),
        "text_encoder": info.text_encoder,
        "max_tokens": str(info.max_tokens),
        "fps": repr(float(info.fps)),
        "steps": str(info.steps),
    }
    sd = {k: (v.to(dtype) if dtype is not None else v) for k, v in model.state_dict().items()}
    atomic_save_safetensors(sd, path, meta)


def load_transformer(path: str | os.PathLike) -> tuple[MaskGIT, PhenakiInfo]:
    path = Path(path)
    meta = _meta(path, TRANSFORMER_FORMAT, "transformer")
    try:
        info = PhenakiInfo(
            tokenizer_id=meta["tokenizer_id"],
            tokenizer_config=CViViTConfig.from_dict(json.loads(meta["tokenizer_config"])),
            text_encoder=meta.get("text_encoder", ""),
            max_tokens=int(meta.get("max_tokens", "32")),
            fps=float(meta.get("fps", "4.0")),
            steps=int(meta.get("steps", "9")),
        )
        cfg = MaskGITConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name}: invalid Phenaki transformer metadata: {e}") from None
    net = MaskGIT(cfg)
    _load_weights(path, net)
    return net, info


class Phenaki:
    """A tokenizer and the transformer trained on its tokens."""

    def __init__(self, tokenizer: CViViT, transformer: MaskGIT, info: PhenakiInfo, tokenizer_id: str = ""):
        _check_pair(tokenizer, transformer, info, tokenizer_id)
        self.tokenizer, self.transformer, self.info = tokenizer, transformer, info

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device) -> Phenaki:
        self.tokenizer.to(device)
        self.transformer.to(device)
        return self

    def check_frames(self, frames: int) -> int:
        """Token steps of a ``frames``-frame clip, with a clear error for a count it cannot make."""
        return self.tokenizer.config.steps(frames)

    @torch.no_grad()
    def generate(
        self,
        text: TextEmbedding,
        frames: int | None = None,
        *,
        steps: int = 12,
        w: float = 3.0,
        temperature: float = 1.0,
        seed: int = 0,
        context: torch.Tensor | None = None,
        callback: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Video ``(B, 3, frames, H, W)`` for ``text``. With ``context`` (the last ``1 + k * t_p``
        frames of a video, ``(B, 3, K, H, W)``), those frames are re-encoded, their tokens are kept
        fixed and the clip continues them: the result holds only the ``frames`` new frames after
        them. Same seed and inputs, same video."""
        cfg = self.tokenizer.config
        if context is None:
            s = self.info.steps if frames is None else self.check_frames(frames)
            given = None
            k = 0
        else:
            k = self.check_frames(context.shape[2])
            if frames is None:
                frames = (self.info.steps - 1) * cfg.temporal_patch
            if frames < 1 or frames % cfg.temporal_patch:
                raise ValueError(f"A continuation adds a multiple of {cfg.temporal_patch} frames; received {frames}.")
            s = k + frames // cfg.temporal_patch
            ctx = self.tokenizer.tokenize(context.to(self.device))
            given = torch.full((text.batch, s, cfg.grid, cfg.grid), -1, dtype=torch.long, device=self.device)
            given[:, :k] = ctx
        ids = sample_tokens(
            self.transformer,
            text,
            s,
            steps=steps,
            w=w,
            temperature=temperature,
            seed=seed,
            given=given,
            callback=callback,
        )
        video = self.tokenizer.detokenize(ids).clamp(-1, 1)
        return video if context is None else video[:, :, cfg.frames(k) :]


def _check_pair(tokenizer: CViViT, transformer: MaskGIT, info: PhenakiInfo, tid: str) -> None:
    tc, mc = tokenizer.config, transformer.config
    if tid and info.tokenizer_id and tid != info.tokenizer_id:
        raise CheckpointError(
            f"This Phenaki transformer was trained on the tokens of another tokenizer (id {info.tokenizer_id}; "
            f"the tokenizer given is {tid}): load the tokenizer file it was trained with."
        )
    if tc.codebook_size != mc.codebook_size or tc.grid != mc.grid or tc != info.tokenizer_config:
        raise CheckpointError(
            f"This Phenaki transformer expects a tokenizer with {mc.codebook_size} codes on a {mc.grid}x{mc.grid} grid; "
            f"the tokenizer given has {tc.codebook_size} codes on a {tc.grid}x{tc.grid} grid: they do not belong together."
        )


def load_phenaki(tokenizer_path: str | os.PathLike, transformer_path: str | os.PathLike, device="cpu") -> Phenaki:
    tok, tid = load_tokenizer(tokenizer_path)
    tf, info = load_transformer(transformer_path)
    return Phenaki(tok, tf, info, tid).to(device)


@dataclass(frozen=True)
class PhenakiOptions:
    """How Phenaki samples: MaskGIT iterations per clip, guidance on the logits, temperature, the
    context frames a continuation re-encodes (``1 + k * temporal_patch``; 5 by default, as the
    story node's ``context_frames``, so that both make the same video; 0: two token steps) and the seed."""

    steps: int = 12
    w: float = 3.0
    temperature: float = 1.0
    context: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.temperature <= 0 or self.w < 0 or self.context < 0:
            raise ValueError("Phenaki options need steps >= 1, temperature > 0, w >= 0 and context >= 0.")


def story_frames(
    ph: Phenaki,
    scenes,
    encode: Callable[[list[str]], TextEmbedding],
    options: PhenakiOptions = PhenakiOptions(),
    progress: Callable[[int, int], None] | None = None,
):
    # progress(frames done, frames of the story)
    """Phenaki's stories (spec §3.3): yield ``(frames (1, 3, n, H, W), scene index)`` as clips
    finish. The first clip comes from the first prompt; every later clip re-encodes the last
    ``context`` frames made so far, keeps their tokens fixed and continues them with the prompt of
    the scene its new frames belong to. Only those context frames are kept between clips, so
    memory does not grow with the story. Clip ``i`` samples with seed ``options.seed + i``."""
    tc = ph.tokenizer.config
    context = options.context or tc.frames(2)
    k = ph.check_frames(context)
    if k >= ph.info.steps:
        raise ValueError(
            f"The context ({context} frames = {k} token steps) must be shorter than a clip ({ph.info.steps} token steps)."
        )
    new_per_clip = (ph.info.steps - k) * tc.temporal_patch
    total = sum(s.frames for s in scenes)
    done = 0
    last = None
    clip = 0
    for si, scene in enumerate(scenes):
        text = encode([scene.prompt])  # only the current scene's text is kept
        left = scene.frames
        while left > 0:
            seed = options.seed + clip
            if last is None:
                out = ph.generate(
                    text,
                    tc.frames(ph.info.steps),
                    steps=options.steps,
                    w=options.w,
                    temperature=options.temperature,
                    seed=seed,
                )
            else:
                usable = 1 + (last.shape[2] - 1) // tc.temporal_patch * tc.temporal_patch  # a length the tokenizer takes
                out = ph.generate(
                    text,
                    new_per_clip,
                    steps=options.steps,
                    w=options.w,
                    temperature=options.temperature,
                    seed=seed,
                    context=last[:, :, -usable:],
                )
            out = out[:, :, :left]
            left -= out.shape[2]
            last = out if last is None else torch.cat([last, out], dim=2)
            if last.shape[2] >= context:
                last = last[:, :, -context:]
            clip += 1
            done += out.shape[2]
            if progress is not None:
                progress(done, total)
            yield out.cpu(), si
