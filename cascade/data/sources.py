"""Where training clips come from: the procedural moving-shapes renderer, or a folder of videos.

A source yields ``(video, caption)`` pairs: ``video`` is ``(T, H, W, 3)`` uint8 at the source's
full resolution and frame rate. Each stage derives its own training pairs from these by
antialiased resizing (space) and frame skipping (time), as in the paper (see ``cascade.train``).
Items are deterministic in ``(seed, index)``, which makes training resumable exactly.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..video_io import VIDEO_SUFFIXES, read_video
from .captions import phrase
from .shapes import COLOURS, SHAPES, Attributes, all_attributes, caption, crossing_start, render_clip

__all__ = ["ShapesSource", "VideoFolderSource", "ImageFolderSource", "make_source"]

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _rng(seed: int, index: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index) & 0xFFFFFFFFFFFF, salt])


@dataclass
class ShapesSource:
    """Procedural moving shapes: ``frames`` reference frames at ``size`` x ``size`` pixels."""

    frames: int = 32
    size: int = 64
    split: str = "train"
    seed: int = 0
    # "varied": captions from the phrasebook's training phrasings (cascade.data.captions); "template":
    # the six fixed templates the first demo stages were trained on
    phrasing: str = "varied"
    # fraction of clips whose shape crosses the frame in its direction (shapes.crossing_start); the
    # others start anywhere on the torus, as every clip did before (0.0), so that continuations
    # from any position stay in the data
    crossing: float = 0.75
    # fraction of clips drawn in a random look (random_look: a flat or smoothly varying background,
    # a random object colour and size) instead of the dataset's near-black, palette and sizes; the caption
    # names the palette colour nearest to the object's. For SR stages, which should upsample any
    # video, not only the dataset's look. 0: exactly the clips of before (a stream of its own)
    looks: float = 0.0
    # relative frequency of each shape (circle, square, triangle; SHAPES' order), each shape's share
    # spread evenly over its combinations in the split. Empty: every combination equally often, by
    # the draw it always used (the clips of before); given, the combination comes from a draw of its own
    shape_mix: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.phrasing not in ("varied", "template"):
            raise ValueError(f"phrasing must be 'varied' or 'template'; received {self.phrasing!r}.")
        if not 0.0 <= self.crossing <= 1.0:
            raise ValueError(f"crossing is a fraction in [0, 1]; received {self.crossing!r}.")
        if not 0.0 <= self.looks <= 1.0:
            raise ValueError(f"looks is a fraction in [0, 1]; received {self.looks!r}.")
        self._attrs = all_attributes(self.split)
        self._pool = set(self._attrs)
        self._p = None
        if self.shape_mix:
            mix = tuple(float(w) for w in self.shape_mix)
            if len(mix) != len(SHAPES) or not all(w >= 0 and np.isfinite(w) for w in mix) or sum(mix) <= 0:
                raise ValueError(
                    f"shape_mix is one non-negative weight per shape ({', '.join(SHAPES)}), not all zero; received {self.shape_mix!r}."
                )
            count = {s: sum(a.shape == s for a in self._attrs) for s in SHAPES}
            p = np.array([mix[SHAPES.index(a.shape)] / count[a.shape] for a in self._attrs])
            self._p = p / p.sum()

    def item(self, index: int, rng: np.random.Generator | None = None) -> tuple[Attributes, int, dict]:
        """What item ``index`` shows: its attributes (as its caption names them), its phrasing
        variant and its look (``render_clip`` keywords; empty: the dataset's). ``rng``: the item's
        main stream, when the caller goes on drawing from it."""
        rng = _rng(self.seed, index) if rng is None else rng
        attrs = self._attrs[int(rng.integers(len(self._attrs)))]
        if self._p is not None:  # a stream of its own, so that the rest of the item is drawn as before
            attrs = self._attrs[int(_rng(self.seed, index, 4).choice(len(self._attrs), p=self._p))]
        variant = int(rng.integers(1000))
        look: dict = {}
        if self.looks > 0:
            look_rng = _rng(self.seed, index, 3)
            if look_rng.random() < self.looks:
                look = random_look(look_rng)
                # the caption's colour: the nearest that keeps the item in its split (a train item
                # must never be captioned as a held-out combination)
                keep = [c for c in COLOURS if replace(attrs, colour=c) in self._pool]
                attrs = replace(attrs, colour=nearest_colour(look["colour"], keep))
        return attrs, variant, look

    def clip(self, index: int, frames: int | None = None, size: int | None = None, frame_step: int = 1):
        """Render item ``index`` (optionally directly at a lower size / frame rate: rendering
        with supersampling is the same antialiased resize, and cheaper)."""
        rng = _rng(self.seed, index)
        attrs, variant, look = self.item(index, rng)
        text = caption(attrs, variant) if self.phrasing == "template" else phrase(attrs, _rng(self.seed, index, 1))
        n = frames or self.frames
        start = None
        if self.crossing > 0:  # a stream of its own: crossing=0 renders exactly the clips it always did
            path_rng = _rng(self.seed, index, 2)
            if path_rng.random() < self.crossing:
                start = crossing_start(attrs, frames=n, frame_step=frame_step, rng=path_rng)
        video = render_clip(attrs, frames=n, size=size or self.size, rng=rng, frame_step=frame_step, start=start, **look)
        return video, text

    def image(self, index: int, size: int | None = None):
        """One still frame with its caption (for joint image-video training)."""
        video, text = self.clip(index + (1 << 40), frames=1, size=size)
        return video[0], text


LOOK_MIN_CONTRAST = 0.35
LOOK_RADIUS = (0.06, 0.26)  # the object's size in a look (the dataset's: 0.11 ... 0.17)


def random_look(rng: np.random.Generator) -> dict:
    """``render_clip`` keywords of a random look: a background that is flat (half the looks) or a
    smooth field between four random corner colours, an object colour at least
    ``LOOK_MIN_CONTRAST`` from every corner (uniform in RGB), and a size in ``LOOK_RADIUS``. SR
    stages train on these so that they upsample what the input shows (gradients, sizes, colours)
    rather than their dataset's look."""
    flat = rng.random() < 0.5
    bg = rng.random((1, 1, 3)) if flat else rng.random((2, 2, 3))  # one colour, or the four corners
    while True:
        colour = rng.random(3)
        if np.linalg.norm(bg - colour, axis=-1).min() >= LOOK_MIN_CONTRAST:
            break
    background = bg[0, 0].tolist() if flat else bg.tolist()
    return {"background": background, "colour": colour.tolist(), "radius": float(rng.uniform(*LOOK_RADIUS))}


def nearest_colour(rgb, names=None) -> str:
    """The palette's name (among ``names``, default all) for an RGB colour (for the caption of a
    clip in a random look)."""
    return min(names or COLOURS, key=lambda k: float(np.linalg.norm(np.subtract(COLOURS[k], rgb))))


class VideoFolderSource:
    """Videos (mp4/webm/gif/...) with captions: a sidecar ``name.txt`` per video, or one JSONL
    manifest (``{"file": ..., "caption": ...}`` per line). Unreadable or too-short videos are
    skipped with a warning and counted; missing captions are an error that lists the files."""

    def __init__(self, root: str | os.PathLike, *, min_frames: int = 1, manifest: str | os.PathLike | None = None, seed: int = 0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Video folder not found: {self.root}")
        self.seed, self.min_frames = seed, min_frames
        self.items = self._index(manifest)
        self.skipped: dict[str, str] = {}
        self._cache: dict[int, np.ndarray] = {}
        if not self.items:
            raise ValueError(f"No videos ({', '.join(VIDEO_SUFFIXES)}) with captions found in {self.root}.")

    def _index(self, manifest) -> list[tuple[Path, str]]:
        if manifest is None and (self.root / "captions.jsonl").exists():
            manifest = self.root / "captions.jsonl"
        if manifest is not None:
            items = []
            for n, line in enumerate(Path(manifest).read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    items.append((self.root / rec["file"], str(rec["caption"]).strip()))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(
                        f"{manifest}:{n}: each line must be a JSON object with 'file' and 'caption' ({e})."
                    ) from None
            return items
        videos = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        missing = [p for p in videos if not p.with_suffix(".txt").exists()]
        if missing:
            shown = "\n  ".join(str(p.relative_to(self.root)) for p in missing[:20])
            more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise ValueError(
                f"{len(missing)} video(s) in {self.root} have no caption. Add a sidecar .txt with the same name, "
                f"or a captions.jsonl manifest. Missing:\n  {shown}{more}"
            )
        return [(p, p.with_suffix(".txt").read_text().strip()) for p in videos]

    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, i: int) -> np.ndarray | None:
        if i in self._cache:
            return self._cache[i]
        path = self.items[i][0]
        try:
            video, _ = read_video(path)
        except Exception as e:  # any decode failure: skip this file, never crash mid-epoch
            self._skip(path, f"unreadable ({type(e).__name__}: {e})")
            return None
        if len(video) < self.min_frames:
            self._skip(path, f"too short ({len(video)} frames, need {self.min_frames})")
            return None
        if len(self._cache) < 256:
            self._cache[i] = video
        return video

    def _skip(self, path: Path, why: str) -> None:
        if str(path) not in self.skipped:
            self.skipped[str(path)] = why
            log.warning("skipping %s: %s (%d skipped so far)", path, why, len(self.skipped))

    def clip(self, index: int, frames: int | None = None, size: int | None = None, frame_step: int = 1):
        """A random window of ``frames * frame_step`` source frames, every ``frame_step``-th kept,
        resized (antialiased) to ``size`` on its short side and centre-cropped to a square."""
        rng = _rng(self.seed, index)
        first = int(rng.integers(len(self.items)))
        for attempt in range(len(self.items)):
            i = (first + attempt) % len(self.items)
            video = self._decode(i)
            if video is None:
                continue
            n = frames or len(video)
            need = (n - 1) * frame_step + 1
            if len(video) < need:
                self._skip(self.items[i][0], f"too short for {n} frames at step {frame_step} ({len(video)} < {need})")
                continue
            start = int(rng.integers(len(video) - need + 1))
            clip = video[start : start + need : frame_step]
            return _square_resize(clip, size) if size else clip, self.items[i][1]
        raise ValueError(
            f"None of the {len(self.items)} videos in {self.root} is usable ({len(self.skipped)} skipped): "
            f"see the warnings above. Reasons, e.g.: {next(iter(self.skipped.values()), 'none')}"
        )

    def image(self, index: int, size: int | None = None):
        video, text = self.clip(index + (1 << 40), frames=1, size=size)
        return video[0], text


class ImageFolderSource:
    """Still images with sidecar ``.txt`` captions, for joint image-video training."""

    def __init__(self, root: str | os.PathLike, seed: int = 0):
        from PIL import Image  # noqa: F401

        self.root, self.seed = Path(root), seed
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        missing = [p for p in files if not p.with_suffix(".txt").exists()]
        if missing:
            raise ValueError(f"{len(missing)} image(s) in {self.root} have no caption .txt, e.g. {missing[0].name}.")
        if not files:
            raise ValueError(f"No images found in {self.root}.")
        self.items = [(p, p.with_suffix(".txt").read_text().strip()) for p in files]

    def image(self, index: int, size: int | None = None):
        from PIL import Image

        path, text = self.items[int(_rng(self.seed, index, 7).integers(len(self.items)))]
        img = np.asarray(Image.open(path).convert("RGB"))
        return (_square_resize(img[None], size)[0] if size else img), text


def _square_resize(video: np.ndarray, size: int) -> np.ndarray:
    import torch

    from ..conditioning import resize_video

    t, h, w, _ = video.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = torch.from_numpy(np.ascontiguousarray(video[:, top : top + s, left : left + s])).float()
    out = resize_video(crop.permute(3, 0, 1, 2)[None], (size, size))[0].permute(1, 2, 3, 0)
    return out.clamp(0, 255).round().byte().numpy()


def make_source(spec: str, *, seed: int = 0, min_frames: int = 1, looks: float = 0.0, shape_mix: tuple[float, ...] = ()):
    """``"shapes"`` (or ``"shapes:held_out"``) or a folder of captioned videos. ``looks``: the
    shapes' fraction of clips in a random look (:attr:`ShapesSource.looks`); ``shape_mix``: how
    often each shape comes (:attr:`ShapesSource.shape_mix`)."""
    if spec.startswith("shapes"):
        split = spec.split(":", 1)[1] if ":" in spec else "train"
        return ShapesSource(split=split, seed=seed, looks=looks, shape_mix=tuple(shape_mix))
    if looks or shape_mix:
        raise ValueError("looks and shape_mix apply to the procedural shapes data only; a video folder has its own.")
    return VideoFolderSource(spec, min_frames=min_frames, seed=seed)
