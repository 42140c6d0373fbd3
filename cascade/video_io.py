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
    """Streams frames to a file, so long videos never sit in memory. Use as a context manager.

    The file is written under a temporary name beside the target (``NAME.partial.mp4``) and renamed
    to the target when it is closed, so an existing file of that name is only ever replaced by a
    finished video. MP4 is written *fragmented*, one fragment per frame, with an encoder that holds
    no frames back: if the process is killed at any moment, the partial file plays every frame that
    was written. On an exception (Cancel, Ctrl-C) the frames so far are kept: renamed to the target
    if it did not exist, else left under the partial name (:attr:`kept` says where)."""

    def __init__(self, path: str | os.PathLike, fps: float, *, crf: int = 18):
        import av

        from .checks import check_output_path

        self.path = check_output_path(path)
        if not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number; received {fps!r}.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = self.path.suffix.lower()
        self.partial = _partial_name(self.path)
        self.kept: Path | None = None
        self.fps = Fraction(fps).limit_denominator(1000)
        options = {}
        if suffix == ".mp4":  # fragmented: playable up to the last frame written, whenever the process dies
            options = {"movflags": "frag_keyframe+empty_moov+default_base_moof+frag_every_frame", "flush_packets": "1"}
        self.container = av.open(str(self.partial), mode="w", format=_FORMATS[suffix], options=options)
        codec = {".mp4": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".gif": "gif"}[suffix]
        self.stream = self.container.add_stream(codec, rate=self.fps)
        self.stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        if codec == "libx264":
            # zerolatency: no lookahead or B-frames, so every frame handed in is encoded and written at once.
            # no-mbtree: with macroblock-tree rate control, x264's AVX-512 code read uninitialised memory and
            # the same frames gave different files from run to run; the same seed must give the same file
            self.stream.options = {"crf": str(crf), "tune": "zerolatency", "x264-params": "no-mbtree=1"}
        self.frames_written = 0
        self._size: tuple[int, int] | None = None

    def write(self, frames) -> None:
        import av

        frames = _even(to_uint8(frames))
        if self._size is None:
            self._size = frames.shape[1:3]
            self.stream.height, self.stream.width = self._size
        elif frames.shape[1:3] != self._size:
            raise ValueError(f"All frames of a video must have one size: {self._size} so far, then {frames.shape[1:3]}.")
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.frames_written += 1

    def _finish(self) -> None:
        if self.container is None:
            return
        try:
            if self._size is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None

    def close(self) -> None:
        """Finish the file and move it to its name (replacing a file of that name)."""
        if self.container is None:
            return
        self._finish()
        os.replace(self.partial, self.path)
        self.kept = self.path

    def abort(self) -> Path | None:
        """Keep what was written after an error: at the target name if nothing was there, else at the
        partial name. Returns where the frames are (None when there were none)."""
        if self.container is None:
            return self.kept
        try:
            self._finish()
        except Exception as e:  # noqa: BLE001 - keep what is on disk whatever the encoder says
            log.warning("finishing %s after an error failed (%s); the frames written so far are in it", self.partial, e)
        if self.frames_written == 0:
            self.partial.unlink(missing_ok=True)
            return None
        if not self.path.exists():
            os.replace(self.partial, self.path)
            self.kept = self.path
        else:
            self.kept = self.partial
            log.warning(
                "kept the %d frames made so far in %s (the existing %s was not replaced)",
                self.frames_written,
                self.partial,
                self.path,
            )
        return self.kept

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".gif": "gif"}


def _partial_name(path: Path) -> Path:
    """``NAME.partial.EXT`` beside ``path`` (``NAME.partial2.EXT`` ... when that is taken: a partial
    file of an earlier interrupted run is never overwritten)."""
    for i in range(1, 1000):
        cand = path.with_name(f"{path.stem}.partial{'' if i == 1 else i}{path.suffix}")
        if not cand.exists():
            return cand
    raise FileExistsError(f"Too many partial files beside {path}; remove the old *.partial*{path.suffix} files.")


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
