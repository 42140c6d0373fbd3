"""The one conversion between the two layouts of a video.

* a *video*, as stages see it: a float tensor ``(B, 3, T, H, W)`` (or one item ``(3, T, H, W)``)
  in [-1, 1];
* *frames*, as files, detectors and ComfyUI's IMAGE see them: ``(T, H, W, 3)`` in [0, 1] (float)
  or 0..255 (uint8).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["frames_to_video", "video_to_frames"]


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """``(1, 3, T, H, W)`` or ``(3, T, H, W)`` in [-1, 1] -> float frames ``(T, H, W, 3)`` in [0, 1]
    (on the video's device; a batch of more than one video is refused)."""
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise ValueError(f"video_to_frames takes one video; received a batch of {video.shape[0]}.")
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"A video must be (3, T, H, W) or (1, 3, T, H, W); received shape {tuple(video.shape)}.")
    return ((video.float().permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)


def frames_to_video(frames) -> torch.Tensor:
    """Frames ``(T, H, W, 3)`` (float in [0, 1], or uint8) -> one video ``(3, T, H, W)`` in [-1, 1]."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Frames must be (T, H, W, 3); received shape {tuple(frames.shape)}.")
    if frames.dtype == torch.uint8:
        return frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0
    return frames.float().permute(3, 0, 1, 2) * 2 - 1
