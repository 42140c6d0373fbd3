"""Story mode: a sequence of prompts becomes one long video (Phenaki's ability, on the cascade).

* :func:`parse_story` accepts what users already write: one prompt per line with an optional
  duration, ComfyUI prompt-schedule keyframes (``"0": "...", "48": "..."``), or a paragraph of
  sentences (one scene per sentence).
* :func:`story_base_frames` generates the base frames window by window: each window is
  conditioned on the last K finished frames (the base stage's known-frame channels; a training-free
  replacement method for bases without them), scene changes cut or blend per frame, and every
  window's seed derives from the story seed. Frames are yielded as they are finished.
* :class:`StreamingSR` runs TSR / SSR over the endless stream in overlapping chunks (windows fused
  at every step inside a chunk, shared per-frame noise and a crossfade across chunks), so memory
  stays bounded whatever the length; :func:`run_story` wires it all and writes the video as it goes.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from .conditioning import known_frames_condition
from .diffusion import augment_condition
from .guidance import Thresholding
from .pipeline import (
    SamplingOptions,
    _aug_logsnr,
    _check_steps_for,
    _seed_for,
    _StepNoise,
    frame_noise,
    upsample_spatial,
    upsample_temporal,
)
from .samplers import get_sampler
from .stage import Stage
from .text import TextEmbedding

__all__ = ["Scene", "StoryOptions", "StreamingSR", "parse_story", "plan_windows", "run_story", "story_base_frames"]

log = logging.getLogger(__name__)

MAX_STORY_SECONDS = 30 * 60
_UNIT = r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>s|sec|secs|second|seconds|f|frame|frames)\b"
_LEAD = re.compile(rf"^\s*(?:\[\s*)?{_UNIT}\s*(?:\])?\s*[:|\-]\s*(?P<prompt>.+)$", re.I)
_TRAIL = re.compile(rf"^(?P<prompt>.+?)\s*(?:[|,]\s*|\(\s*){_UNIT}\s*\)?\s*$", re.I)
_BARE_PIPE = re.compile(r"^(?P<prompt>.+?)\s*\|\s*(?P<num>\d+(?:\.\d+)?)\s*$|^\s*(?P<num2>\d+(?:\.\d+)?)\s*\|\s*(?P<prompt2>.+)$")
_KEYFRAME = re.compile(r'^\s*\{?\s*"-?\d+(?:\.\d+)?"\s*:', re.S)


@dataclass(frozen=True)
class Scene:
    prompt: str
    frames: int  # base frames
    line: int = 0  # 1-based line (or sentence) number in the story text, for messages


def _frames(seconds: float, fps: float) -> int:
    return max(1, round(seconds * fps))


def _duration(num: str, unit: str, fps: float, where: str) -> int:
    value = float(num)
    if value <= 0:
        raise ValueError(f"{where}: a scene must last more than 0; received {num} {unit}.")
    return max(1, round(value)) if unit.lower().startswith("f") else _frames(value, fps)


def parse_story(text: str, *, fps: float, default_seconds: float = 4.0, max_seconds: float = MAX_STORY_SECONDS) -> list[Scene]:
    """Scenes with durations in base frames (at ``fps``). Raises ``ValueError`` naming the line at fault."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "The story is empty: write one prompt per line (optionally with a duration like '| 4s'), "
            'keyframes like "0": "...", "48": "...", or a paragraph of sentences.'
        )
    if not fps > 0:
        raise ValueError(f"fps must be positive; received {fps}.")
    if _KEYFRAME.match(text):
        scenes = _parse_keyframes(text, fps, default_seconds)
    else:
        lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.strip().startswith("#")]
        if len(lines) == 1 and not _has_duration(lines[0][1]):
            scenes = _parse_paragraph(lines[0][1], lines[0][0], fps, default_seconds)
        else:
            scenes = [_parse_line(n, ln, fps, default_seconds) for n, ln in lines]
    if not scenes:
        raise ValueError("The story has no scenes.")
    total = sum(s.frames for s in scenes) / fps
    if total > max_seconds:
        raise ValueError(f"The story lasts {total:.0f} s, beyond the maximum of {max_seconds:.0f} s. Shorten it or split it.")
    return scenes


def _has_duration(line: str) -> bool:
    return bool(_LEAD.match(line) or _TRAIL.match(line) or _BARE_PIPE.match(line))


def _parse_line(n: int, line: str, fps: float, default_seconds: float) -> Scene:
    where = f"line {n} ({line[:40]!r})"
    for rx in (_LEAD, _TRAIL):
        m = rx.match(line)
        if m:
            prompt = m.group("prompt").strip(" |:-,")
            if not prompt:
                raise ValueError(f"{where}: the scene has a duration but no prompt.")
            return Scene(prompt, _duration(m.group("num"), m.group("unit"), fps, where), n)
    m = _BARE_PIPE.match(line)
    if m:  # "prompt | 4" or "4 | prompt": seconds
        num = m.group("num") or m.group("num2")
        prompt = (m.group("prompt") or m.group("prompt2")).strip()
        return Scene(prompt, _duration(num, "s", fps, where), n)
    if re.search(r"\|\s*-\s*\d|^\s*-\s*\d+(?:\.\d+)?\s*(?:s|f)\b", line, re.I):
        raise ValueError(f"{where}: a scene must last more than 0 (negative duration).")
    return Scene(line.strip(), _frames(default_seconds, fps), n)


def _parse_paragraph(par: str, n: int, fps: float, default_seconds: float) -> list[Scene]:
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", par) if s.strip()]
    return [Scene(s.rstrip(".!?").strip() or s, _frames(default_seconds, fps), i + 1) for i, s in enumerate(sentences)]


def _parse_keyframes(text: str, fps: float, default_seconds: float) -> list[Scene]:
    body = text.strip()
    if not body.startswith("{"):
        body = "{" + body + "}"
    body = re.sub(r",\s*}", "}", body)  # trailing comma, as prompt-schedule users write
    try:
        raw = json.loads(body, object_pairs_hook=list)
    except json.JSONDecodeError as e:
        line = e.lineno
        shown = text.splitlines()[line - 1].strip()[:60] if line - 1 < len(text.splitlines()) else ""
        raise ValueError(
            f'Keyframes: cannot parse line {line} ({shown!r}): {e.msg}. Expected lines like "0": "a red circle moving right",'
        ) from None
    keys = []
    for i, (k, v) in enumerate(raw, 1):
        try:
            frame = float(k)
        except ValueError:
            raise ValueError(f"Keyframe {i}: {k!r} is not a frame number.") from None
        if frame < 0 or frame != int(frame):
            raise ValueError(f"Keyframe {i}: frame {k!r} must be a whole number >= 0.")
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"Keyframe {i} (frame {k}): the prompt is empty.")
        keys.append((int(frame), v.strip(), i))
    keys.sort()
    for (a, _, ia), (b, _, ib) in zip(keys, keys[1:]):
        if a == b:
            raise ValueError(f"Keyframes {ia} and {ib} both start at frame {a}: a scene must last more than 0 frames.")
    scenes = []
    for j, (start, prompt, line) in enumerate(keys):
        end = keys[j + 1][0] if j + 1 < len(keys) else start + _frames(default_seconds, fps)
        scenes.append(Scene(prompt, end - (start if j else 0), line))  # frames before the first keyframe use its prompt
    return scenes


# --- window scheduling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    index: int
    scene: int  # scene of the new frames
    start: int  # absolute index of the first NEW frame
    new: int  # new frames kept from this window
    context: int  # known frames at the head of the window
    prev_scene: int | None  # scene of the context frames when it differs (a scene change)


def plan_windows(scenes: list[Scene], window: int = 16, context: int = 4) -> list[Window]:
    """Windows of ``window`` frames: the first ``context`` are the last finished frames (none for the
    very first window), the rest are new. A scene change always starts a new window, so every
    window's new frames belong to one scene. Work grows linearly with the story's length."""
    if window < 2 or not 0 <= context < window:
        raise ValueError(f"Need window >= 2 and 0 <= context < window; received window={window}, context={context}.")
    plan, pos = [], 0
    for si, scene in enumerate(scenes):
        left = scene.frames
        first_of_scene = True
        while left > 0:
            ctx = min(context, pos)  # scenes shorter than the context: only what is finished so far
            new = min(window - ctx, left)
            plan.append(Window(len(plan), si, pos, new, ctx, si - 1 if first_of_scene and si > 0 else None))
            pos += new
            left -= new
            first_of_scene = False
    return plan


# --- base generation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoryOptions:
    window: int = 16
    context: int = 4
    transition: str = "cut"  # "cut" or "blend"
    transition_frames: int = 4
    context_noise: float = 0.2  # noise augmentation of the known frames (0..1, like the SR stages)
    anchor: bool = False  # also show the first frame of the current scene (slot 0)

    def __post_init__(self) -> None:
        if self.transition not in ("cut", "blend"):
            raise ValueError(f"transition must be 'cut' or 'blend'; received {self.transition!r}.")
        if self.transition_frames < 1:
            raise ValueError("transition_frames must be >= 1.")
        if not 0 <= self.context_noise <= 1:
            raise ValueError("context_noise must be in [0, 1].")


class _BlendGuidance:
    """Classifier-free guidance with per-frame prompt blending: the conditional prediction is
    ``sum_k beta_k[f] x(c_k)`` (one pass per prompt) and the unconditional branch is shared:
    ``(1 + w) x_blend - w x(null)``."""

    def __init__(self, denoise, texts: list[TextEmbedding], betas: torch.Tensor, w: float):
        self.denoise, self.texts, self.betas, self.w = denoise, texts, betas, w  # betas: (K, T)

    def __call__(self, x, sigma, **cond):
        k, b = len(self.texts), x.shape[0]
        null = TextEmbedding.null(b, self.texts[0].width)
        both = TextEmbedding.concat([*self.texts, null])
        rep = {
            n: torch.cat([v] * (k + 1)) if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == b else v
            for n, v in cond.items()
        }
        x0 = self.denoise(torch.cat([x] * (k + 1)), torch.cat([sigma] * (k + 1)), text=both, **rep).reshape(k + 1, *x.shape)
        beta = self.betas.to(x0).reshape(k, 1, 1, -1, 1, 1)
        cond_pred = (x0[:k] * beta).sum(0)
        return cond_pred + self.w * (cond_pred - x0[k]) if self.w else cond_pred


class _Replacement:
    """Training-free continuation for bases without known-frame channels (VDM's replacement
    method): the known frames of the state are replaced by noised known data at every step."""

    def __init__(self, denoise, known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
        self.denoise, self.known, self.noise = denoise, known, noise
        self.m = mask.reshape(1, 1, -1, 1, 1).to(known)

    def __call__(self, x, sigma, **cond):
        s = sigma.reshape(-1, 1, 1, 1, 1).to(x)
        x = x * (1 - self.m) + (self.known + s * self.noise) * self.m
        x0 = self.denoise(x, sigma, **cond)
        return x0 * (1 - self.m) + self.known * self.m


def _betas(w: Window, opts: StoryOptions, frames: int) -> torch.Tensor | None:
    """Per-frame weight of the NEW scene's prompt in a transition window (None: no blending)."""
    if w.prev_scene is None or opts.transition == "cut":
        return None
    f = torch.arange(frames, dtype=torch.float32) - w.context
    beta = ((f + 1) / (opts.transition_frames + 1)).clamp(0, 1)
    return torch.stack([1 - beta, beta])  # (2, T): previous scene, new scene


def story_base_frames(
    base: Stage,
    scenes: list[Scene],
    encode: Callable[[list[str]], TextEmbedding],
    *,
    options: SamplingOptions = SamplingOptions(),
    story: StoryOptions = StoryOptions(),
    height: int | None = None,
    width: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Yield ``(frames (1, 3, n, H, W) in [-1, 1], scene index)`` as windows finish. Memory holds
    only the last ``context`` frames (+ the scene's anchor frame) and one window."""
    cfg = base.config
    if base.role != "base":
        raise ValueError(f"Story generation needs a base stage; received a {cfg.describe()}.")
    _check_steps_for(base, options)
    h, w_ = height or cfg.height, width or cfg.width
    plan = plan_windows(scenes, story.window, story.context)
    if not cfg.continuation:
        log.warning(
            "%s has no known-frame channels: story mode falls back to the training-free replacement method "
            "(expect weaker continuity). Fine-tune the base with continuation for best results.",
            base.source or cfg.name,
        )
    texts = {}
    sigmas = cfg.schedule.sigmas(options.steps)
    sampler = get_sampler(options.sampler)
    last = None  # (1, 3, context, H, W)
    anchor = None
    for win in plan:
        if win.index and win.prev_scene is not None:
            anchor = None
        for si in {win.scene, win.prev_scene} - {None}:
            if si not in texts:
                texts[si] = encode([scenes[si].prompt])
                base.check_text(texts[si])
        frames = story.window
        shape = (1, 3, frames, h, w_)
        seed = _seed_for(options.seed, 7, win.index) % (2**62)
        known = torch.zeros(shape)
        mask = torch.zeros(1, frames)
        if win.context:
            known[:, :, : win.context] = last[:, :, -win.context :]
            mask[:, : win.context] = 1
        if story.anchor and anchor is not None and win.context:
            known[:, :, 0] = anchor
            mask[:, 0] = 1
        den = base.denoiser()
        kw: dict = {}
        if cfg.continuation:
            lam = _aug_logsnr(base, replace(options, aug_level=story.context_noise), 1)
            aug = augment_condition(known, lam, generator=torch.Generator().manual_seed(seed + 1))
            kw = {"cond": known_frames_condition(aug, mask), "aug_logsnr": lam}
        elif win.context:
            den = _Replacement(den, known, mask[0], frame_noise(seed, 3, shape))
        if cfg.is_distilled and cfg.distillation.guided:
            g = torch.full((1,), float(options.guidance))

            def model(x, sigma, _den=den, _t=texts[win.scene], _g=g, **c):
                return _den(x, sigma, text=_t, guidance=_g, **c)
        else:
            betas = _betas(win, story, frames)
            prompts = [texts[win.scene]] if betas is None else [texts[win.prev_scene], texts[win.scene]]
            model = _BlendGuidance(den, prompts, torch.ones(1, frames) if betas is None else betas, options.guidance)
        if options.thresholding != "none":
            model = Thresholding(model, options.thresholding, options.percentile)
        x = frame_noise(seed, 0, shape) * sigmas[0]
        with torch.no_grad():
            out = sampler(
                model,
                x,
                sigmas,
                extra_args=kw,
                gamma=options.gamma,
                noise_sampler=_StepNoise(seed, shape, 0, "cpu"),
                callback=(lambda info, _i=win.index: progress(_i, len(plan), info["i"] + 1)) if progress else None,
            )
        out = out.clamp(-1, 1)
        new = out[:, :, win.context : win.context + win.new]
        if anchor is None:
            anchor = new[:, :, 0].clone()
        keep = max(story.context, 1)
        last = (new if last is None else torch.cat([last, new], dim=2))[:, :, -keep:]
        yield new, win.scene


# --- streaming super-resolution -------------------------------------------------------------------


class StreamingSR:
    """Runs one SR stage over a stream of frames in overlapping chunks with bounded memory.

    Inside a chunk the stage's own temporal windows are fused at every step; consecutive chunks
    overlap by ``overlap`` input frames, use the same per-frame noise there (noise is keyed by the
    absolute frame index), and the overlapping outputs are crossfaded linearly."""

    def __init__(
        self,
        stage: Stage,
        text_at: Callable[[int], TextEmbedding],
        options: SamplingOptions,
        *,
        chunk: int = 16,
        overlap: int = 4,
        multiplier: int | None = None,
        mode: str = "imagen",
        scale: float | None = None,
    ):
        if overlap >= chunk:
            raise ValueError("The SR chunk overlap must be smaller than the chunk.")
        self.stage, self.text_at, self.options = stage, text_at, options
        self.chunk, self.overlap, self.mode = chunk, overlap, mode
        self.factor = (multiplier or stage.config.temporal_factor) if stage.role == "tsr" else 1
        self.scale = scale
        self.buf: torch.Tensor | None = None  # pending input frames (1, 3, n, h, w)
        self.buf_start = 0  # absolute input index of buf[0]
        self.tail: torch.Tensor | None = None  # output of the previous chunk's overlap, to crossfade
        self.emitted_in = 0  # input frames whose outputs were emitted

    def _run(self, frames: torch.Tensor, start: int) -> torch.Tensor:
        text = self.text_at(start + frames.shape[2] // 2)
        if self.stage.role == "ssr":
            return upsample_spatial(self.stage, frames, text, scale=self.scale, options=self.options, frame_offset=start)
        return upsample_temporal(
            self.stage, frames, text, multiplier=self.factor, mode="imagen", options=self.options, frame_offset=start
        )

    def push(self, frames: torch.Tensor) -> Iterator[torch.Tensor]:
        self.buf = frames if self.buf is None else torch.cat([self.buf, frames], dim=2)
        while self.buf.shape[2] >= self.chunk:
            yield self._emit(final=False)

    def flush(self) -> Iterator[torch.Tensor]:
        if self.buf is not None and self.buf.shape[2] > (self.overlap if self.tail is not None else 0):
            yield self._emit(final=True)
        elif self.tail is not None:
            yield self.tail
        self.buf, self.tail = None, None

    def _emit(self, final: bool) -> torch.Tensor:
        n = self.buf.shape[2] if final else self.chunk
        out = self._run(self.buf[:, :, :n], self.buf_start)  # (1, 3, n*f, H, W)
        f = self.factor
        if self.tail is not None:  # crossfade the first `overlap` inputs' outputs with the previous chunk
            k = self.tail.shape[2]
            ramp = ((torch.arange(k, dtype=torch.float32) + 1) / (k + 1)).reshape(1, 1, k, 1, 1)
            out = torch.cat([self.tail * (1 - ramp) + out[:, :, :k] * ramp, out[:, :, k:]], dim=2)
        if final:
            emit, self.tail = out, None
        else:
            keep = self.overlap * f
            emit, self.tail = out[:, :, : out.shape[2] - keep], out[:, :, out.shape[2] - keep :]
            self.buf = self.buf[:, :, n - self.overlap :]
            self.buf_start += n - self.overlap
        return emit


def run_story(
    scenes: list[Scene],
    *,
    base: Stage,
    encode: Callable[[list[str]], TextEmbedding],
    tsr: Stage | None = None,
    ssr: Stage | None = None,
    options: dict[str, SamplingOptions],
    story: StoryOptions = StoryOptions(),
    sink: Callable[[torch.Tensor, int], None],
    sr_chunk: int = 16,
    sr_overlap: int = 4,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Generate the whole story through the cascade, handing finished frames (``(1, 3, n, H, W)`` in
    [-1, 1]) and their scene index to ``sink`` as they are made. Returns timing per scene."""
    import time

    starts = [0]
    for s in scenes:
        starts.append(starts[-1] + s.frames)
    cache: dict[int, TextEmbedding] = {}

    def scene_of(base_frame: int) -> int:
        for i in range(len(scenes)):
            if base_frame < starts[i + 1]:
                return i
        return len(scenes) - 1

    def text_for(scale: int):
        def at(idx: int) -> TextEmbedding:
            s = scene_of(idx // scale)
            if s not in cache:
                cache[s] = encode([scenes[s].prompt])
            return cache[s]

        return at

    stages = []
    if tsr is not None:
        stages.append(StreamingSR(tsr, text_for(1), options["tsr"], chunk=sr_chunk, overlap=sr_overlap))
    if ssr is not None:
        f = tsr.config.temporal_factor if tsr is not None else 1
        stages.append(StreamingSR(ssr, text_for(f), options["ssr"], chunk=sr_chunk * f, overlap=sr_overlap * f))
    scene_time: dict[int, float] = {}
    emitted = [0]
    scale = _frame_scale(stages)

    def push(level: int, frames: torch.Tensor) -> None:
        if level == len(stages):
            sink(frames, scene_of(emitted[0] // scale))
            emitted[0] += frames.shape[2]
            return
        for out in stages[level].push(frames):
            push(level + 1, out)

    def flush(level: int) -> None:
        if level == len(stages):
            return
        for out in stages[level].flush():
            push(level + 1, out)
        flush(level + 1)

    t_last = time.perf_counter()
    for frames, si in story_base_frames(
        base,
        scenes,
        encode,
        options=options["base"],
        story=story,
        progress=(lambda w, n, s: progress("base", w, n)) if progress else None,
    ):
        push(0, frames)
        now = time.perf_counter()
        scene_time[si] = scene_time.get(si, 0.0) + now - t_last
        t_last = now
    flush(0)
    return {"seconds_per_scene": [round(scene_time.get(i, 0.0), 2) for i in range(len(scenes))], "frames": emitted[0]}


def _frame_scale(stages: list[StreamingSR]) -> int:
    return math.prod(s.factor for s in stages)
