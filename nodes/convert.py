"""Conversions at the ComfyUI boundary: IMAGE <-> video tensors, CONDITIONING <-> TextEmbedding."""

from __future__ import annotations

import torch

from ..cascade.frames import frames_to_video, video_to_frames
from ..cascade.text import TextEmbedding

IMAGEN_KEY = "imagen_video_encoder"


def image_to_video(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """ComfyUI IMAGE ``[frames, H, W, C]`` in [0, 1] -> ``(1, 3, T, H, W)`` in [-1, 1]."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"The {what} input must be an IMAGE batch [frames, height, width, channels]; received {shape}.")
    if images.shape[0] < 1:
        raise ValueError(f"The {what} input has no frames.")
    c = images.shape[-1]
    if c == 4:
        images = images[..., :3]
    elif c == 1:
        images = images.expand(*images.shape[:3], 3)
    elif c != 3:
        raise ValueError(f"The {what} input has {c} channels; expected RGB (3) images.")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"The {what} input contains NaN or infinite values; check the node that produced it.")
    return frames_to_video(images[..., :3])[None]


def video_to_image(video: torch.Tensor, device) -> torch.Tensor:
    """``(1, 3, T, H, W)`` in [-1, 1] -> IMAGE ``[T, H, W, 3]`` in [0, 1] on ``device``."""
    return video_to_frames(video).to(device)


def text_to_conditioning(text: TextEmbedding) -> list:
    """Our encoder's output as a ComfyUI CONDITIONING (one entry per prompt)."""
    out = []
    for i in range(text.batch):
        n = int(text.mask[i].sum())
        out.append(
            [
                text.tokens[i : i + 1, :n].clone(),
                {
                    "pooled_output": text.pooled[i : i + 1].clone(),
                    "attention_mask": torch.ones(1, n, dtype=torch.long),
                    IMAGEN_KEY: text.encoder_id,
                },
            ]
        )
    return out


def conditioning_to_text(cond, what: str = "positive") -> TextEmbedding:
    """Any CONDITIONING (ours, or core CLIPTextEncode with a T5 from CLIPLoader) -> TextEmbedding.

    The pooled vector is always the masked mean of the tokens (what our stages are trained with);
    core's ``pooled_output`` (a CLIP projection) is not used. Without a mask, all-zero token rows
    (masked padding that ComfyUI zeroes out) are treated as padding."""
    if not isinstance(cond, list) or not cond or not isinstance(cond[0], (list, tuple)) or len(cond[0]) < 2:
        raise ValueError(
            f"The {what} input is not a CONDITIONING; connect a text-encode node (ImagenVideoTextEncode or CLIPTextEncode)."
        )
    tokens, extra = cond[0][0], cond[0][1]
    if len(cond) > 1:
        raise ValueError(
            f"The {what} conditioning holds {len(cond)} prompts (combined or scheduled conditioning); "
            "Imagen Video stages take one prompt. For several prompts over time, use the ImagenVideoStory node."
        )
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
        raise ValueError(f"The {what} conditioning has no token embeddings [1, tokens, width].")
    tokens = tokens[:1].float().cpu()
    mask = extra.get("attention_mask") if isinstance(extra, dict) else None
    if mask is not None and mask.shape[-1] == tokens.shape[1]:
        mask = mask.reshape(1, -1).bool().cpu()
    else:
        mask = tokens.abs().amax(-1) > 0
    if not bool(mask.any()):
        raise ValueError(f"The {what} conditioning is empty (no tokens). Write a prompt.")
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    encoder = extra.get(IMAGEN_KEY, "") if isinstance(extra, dict) else ""
    return TextEmbedding(tokens, mask, pooled, encoder)
