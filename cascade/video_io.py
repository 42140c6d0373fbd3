"""Reading and writing real video files with PyAV (no ffmpeg binary needed).

Frames on this side are uint8 numpy arrays ``(T, H, W, 3)`` or float tensors in [0, 1].
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["VideoWriter", "read_video", "to_uint8", "write_video", "write_gif"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".mkv", ".mov", ".avi")


def to_uint8(frames) -> np.ndarray:
    """Float [0, 1] tensor/array or uint8 array ``(T, H, W, 3)`` -> uint8 numpy."""
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _even(frames: np.ndarray) -> np.ndarray:
    """h264/yuv420p needs even sizes: pad the last row/column by edge replication."""
    t, h, w, c = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """Streams frames to a file, so long videos never sit in memory. Use as a context manager;
    the file is playable after :meth:`close` (also on an exception: what was written is kept)."""

    def __init__(self, path: str | os.PathLike, fps: float, *, crf: int = 18):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = self.path.suffix.lower()
        if suffix not in (".mp4", ".webm", ".mkv", ".gif"):
            raise ValueError(f"Unsupported output format {suffix!r}; use .mp4, .webm, .mkv or .gif.")
        self.fps = Fraction(fps).limit_denominator(1000)
        self.container = av.open(str(self.path), mode="w")
        codec = {".mp4": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".gif": "gif"}[suffix]
        self.stream = self.container.add_stream(codec, rate=self.fps)
        self.stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        if codec == "libx264":
            # no macroblock-tree rate control: with it, x264's AVX-512 code read uninitialised memory
            # and the same frames gave different files from run to run (pixels off by up to 30 levels);
            # the same seed must give the same file
            self.stream.options = {"crf": str(crf), "x264-params": "no-mbtree=1"}
        self.frames_written = 0
        self._size: tuple[int, int] | None = None

    def write(self, frames) -> None:
        import av

        frames = _even(to_uint8(frames))
        if self._size is None:
            self._size = frames.shape[1:3]
            self.stream.height, self.stream.width = self._size
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | os.PathLike, frames, fps: float) -> Path:
    with VideoWriter(path, fps) as w:
        w.write(frames)
    return Path(path)


def write_gif(path: str | os.PathLike, frames, fps: float, scale: int = 1) -> Path:
    """An animated GIF with Pillow (for READMEs and training samples)."""
    from PIL import Image

    frames = to_uint8(frames)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(f) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0, optimize=False)
    return path


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video (mp4/webm/gif/...) to ``(T, H, W, 3)`` uint8 and its frame rate."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no video frames could be decoded.")
    return np.stack(frames), rate
