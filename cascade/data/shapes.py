"""The procedural "moving shapes" dataset the demo cascade is trained on (spec §5.2).

One anti-aliased shape per clip on a dark background, moving in a straight line on a torus
(it wraps around the borders, so motion never has to stop): colour x shape x direction x speed,
with several caption phrasings. Rendering is deterministic in ``(seed, index)`` and fast (numpy).
About 10 % of the (colour, shape, direction) triples are held out of training (:data:`HELD_OUT`)
to measure compositional generalisation.

Units: positions and speeds are fractions of the frame size, per *reference frame*; the
reference frame rate is the demo cascade's final rate (32 frames per clip), so the base stage,
which sees every second frame, sees objects move twice as far per frame.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "DIRECTIONS",
    "EXTRA_SHAPES",
    "HELD_OUT",
    "SHAPES",
    "REFERENCE_FPS",
    "SPEEDS",
    "Attributes",
    "all_attributes",
    "caption",
    "crossing_start",
    "render_clip",
    "sample_attributes",
]

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.16, 0.14),
    "green": (0.16, 0.78, 0.24),
    "blue": (0.20, 0.36, 0.95),
    "yellow": (0.93, 0.86, 0.16),
    "white": (0.95, 0.95, 0.95),
}
SHAPES = ("circle", "square", "triangle")
EXTRA_SHAPES = ("diamond", "ring")  # never in training data: the SR evaluation's unlike clips
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEEDS: dict[str, float] = {"slowly": 0.010, "quickly": 0.025}  # fraction of the frame per reference frame
REFERENCE_FPS = 8.0  # the reference frame rate: the demo cascade's final rate
BACKGROUND = (0.07, 0.07, 0.09)

# (colour, shape, direction) triples never shown in training: 6 of 60 (10 %); every colour, shape
# and direction still appears in training with other partners.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("red", "triangle", "up"),
        ("green", "circle", "left"),
        ("blue", "square", "down"),
        ("yellow", "triangle", "right"),
        ("white", "circle", "down"),
        ("green", "square", "up"),
    }
)

_TEMPLATES = (
    "a {c} {s} moving {d} {v}",
    "a {c} {s} moving {v} to the {d}",
    "a {c} {s} moves {d} {v}",
    "{c} {s} sliding {d} {v}",
    "a {c} {s} drifting {v} {d}",
    "the {c} {s} travels {v} to the {d}",
)
_VERTICAL_TEMPLATES = (
    "a {c} {s} moving {d} {v}",
    "a {c} {s} moving {v} {d}",
    "a {c} {s} moves {d} {v}",
    "{c} {s} sliding {d} {v}",
    "a {c} {s} drifting {v} {d}",
    "the {c} {s} travels {v} {d}wards",
)


@dataclass(frozen=True)
class Attributes:
    colour: str
    shape: str
    direction: str
    speed: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS or self.shape not in SHAPES or self.direction not in DIRECTIONS or self.speed not in SPEEDS:
            raise ValueError(
                f"Unknown attribute in {self}; vocabulary: {list(COLOURS)}, {SHAPES}, {list(DIRECTIONS)}, {list(SPEEDS)}."
            )

    @property
    def held_out(self) -> bool:
        return (self.colour, self.shape, self.direction) in HELD_OUT

    def as_tuple(self) -> tuple[str, str, str, str]:
        return (self.colour, self.shape, self.direction, self.speed)


def all_attributes(split: str = "all") -> list[Attributes]:
    """Every attribute combination in ``split`` (``"train"``, ``"held_out"`` or ``"all"``)."""
    out = [Attributes(*a) for a in itertools.product(COLOURS, SHAPES, DIRECTIONS, SPEEDS)]
    if split == "train":
        return [a for a in out if not a.held_out]
    if split == "held_out":
        return [a for a in out if a.held_out]
    if split != "all":
        raise ValueError(f"split must be 'train', 'held_out' or 'all'; received {split!r}.")
    return out


def caption(attrs: Attributes, variant: int = 0) -> str:
    """One of several phrasings; ``variant`` picks it (modulo the number of templates)."""
    templates = _VERTICAL_TEMPLATES if attrs.direction in ("up", "down") else _TEMPLATES
    t = templates[variant % len(templates)]
    return t.format(c=attrs.colour, s=attrs.shape, d=attrs.direction, v=attrs.speed)


def sample_attributes(rng: np.random.Generator, split: str = "train") -> Attributes:
    pool = all_attributes(split)
    return pool[int(rng.integers(len(pool)))]


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean inside-mask for offsets ``(dx, dy)`` from the shape centre (radius-like size r)."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = r * 0.886  # same area as the circle: side = r * sqrt(pi)
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "diamond":  # a square turned by 45 degrees, same area as the circle
        return np.abs(dx) + np.abs(dy) <= r * 1.253
    if shape == "ring":  # a circle with a hole of half its radius
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= 0.25 * r * r)
    # upward isosceles triangle, base width = height = 2h, centred on its bounding box
    h = r * 1.25
    inside_y = (dy >= -h) & (dy <= h)
    half_width = (dy + h) / 2.0  # 0 at the apex (top), h at the base
    return inside_y & (np.abs(dx) <= half_width)


def render_clip(
    attrs: Attributes,
    *,
    frames: int,
    size: int,
    rng: np.random.Generator,
    frame_step: int = 1,
    supersample: int = 4,
    start: tuple[float, float] | None = None,
    radius: float | None = None,
    speed: float | None = None,
    colour: tuple[float, float, float] | None = None,
    background: tuple | None = None,
    shape: str | None = None,
) -> np.ndarray:
    """Render ``(frames, size, size, 3)`` uint8. Every ``frame_step``-th reference frame is shown
    (``frame_step = 2``: the base stage's half frame rate). Start position and size are random
    unless given (fractions of the frame). ``speed`` (fraction of the frame per reference frame),
    ``colour`` and ``background`` (RGB in [0, 1]; or two RGB triples: a vertical gradient from the
    top to the bottom row; or 2x2: four corners, bilinear in between) replace the ones of ``attrs`` / the dataset, and ``shape`` may also be
    one no caption names (:data:`EXTRA_SHAPES`), for clips unlike the training data (the
    evaluation's other motions and looks)."""
    shape = attrs.shape if shape is None else shape
    if shape not in SHAPES + EXTRA_SHAPES:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES + EXTRA_SHAPES}.")
    if frames < 1 or size < 4:
        raise ValueError(f"render_clip needs frames >= 1 and size >= 4; received {frames}, {size}.")
    cx0, cy0 = (rng.random(), rng.random()) if start is None else start
    r = float(rng.uniform(0.11, 0.17)) if radius is None else radius
    vx, vy = DIRECTIONS[attrs.direction]
    speed = (SPEEDS[attrs.speed] if speed is None else float(speed)) * frame_step
    n = size * supersample
    coords = (np.arange(n) + 0.5) / n  # pixel centres in [0, 1)
    colour = np.array(COLOURS[attrs.colour] if colour is None else colour, dtype=np.float32)
    bg = np.array(BACKGROUND if background is None else background, dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    if bg.shape == (2, 3):  # vertical gradient: one colour per row
        bg = bg[0] * (1 - ramp[:, None, None]) + bg[1] * ramp[:, None, None]  # (size, 1, 3)
    elif bg.shape == (2, 2, 3):  # four corners ((top-left, top-right), (bottom-left, bottom-right)), bilinear
        top = bg[0, 0] * (1 - ramp[:, None]) + bg[0, 1] * ramp[:, None]  # (size, 3) along x
        bottom = bg[1, 0] * (1 - ramp[:, None]) + bg[1, 1] * ramp[:, None]
        bg = top[None] * (1 - ramp[:, None, None]) + bottom[None] * ramp[:, None, None]  # (size, size, 3)
    elif bg.shape != (3,):
        raise ValueError(
            f"background must be one RGB triple, two (a vertical gradient) or 2x2 (four corners); received shape {bg.shape}."
        )
    else:
        bg = bg[None, None]
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        cx, cy = (cx0 + vx * speed * f) % 1.0, (cy0 + vy * speed * f) % 1.0
        dx = (coords[None, :] - cx + 0.5) % 1.0 - 0.5  # shortest offset on the torus
        dy = (coords[:, None] - cy + 0.5) % 1.0 - 0.5
        cov = _coverage(shape, dx, dy, r).astype(np.float32)
        cov = cov.reshape(size, supersample, size, supersample).mean(axis=(1, 3))  # box-filter: anti-aliasing
        img = bg * (1 - cov[..., None]) + colour[None, None] * cov[..., None]
        out[f] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def crossing_start(attrs: Attributes, *, frames: int, rng: np.random.Generator, frame_step: int = 1) -> tuple[float, float]:
    """A start position from which the shape *crosses* the frame in its direction: along the motion
    it starts on the side it moves away from, so that its path is centred (within a margin that
    shrinks as the path lengthens); across the motion it is uniform. Videos of "a circle moving
    right" then show the circle entering on the left and leaving on the right, so the direction word
    also says *where* the shape is, the way it does for a viewer, and not only where it goes next."""
    travel = SPEEDS[attrs.speed] * frame_step * max(frames - 1, 0)
    jitter = max(0.0, (1.0 - travel) / 2 - 0.1)
    centre = 0.5 + float(rng.uniform(-jitter, jitter))
    across = float(rng.random())
    vx, vy = DIRECTIONS[attrs.direction]
    along = (centre - (vx + vy) * travel / 2) % 1.0
    return (along, across) if vx else (across, along)


def speed_pixels_per_frame(speed: str, size: int, frame_step: int = 1) -> float:
    return SPEEDS[speed] * frame_step * size


def expected_travel(attrs: Attributes, frames: int, frame_step: int = 1) -> float:
    """Distance travelled over the clip, as a fraction of the frame."""
    return SPEEDS[attrs.speed] * frame_step * (frames - 1)


def _sanity() -> None:  # pragma: no cover - documentation of the design numbers
    # base: 16 frames at half rate -> slowly travels 0.30 of the frame, quickly 0.75
    assert math.isclose(expected_travel(Attributes("red", "circle", "left", "slowly"), 16, 2), 0.30)
