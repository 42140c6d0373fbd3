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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from .guidance import FramePrompts
from .pipeline import SamplingOptions, check_options, generate, upsample
from .roles import output_fps, require_role
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
    n = round(seconds * fps)
    if n < 1:
        raise ValueError(f"A scene of {seconds:g} s at {fps:g} fps has no frames; make it at least {1 / fps:g} s long.")
    return n


def _duration(num: str, unit: str, fps: float, where: str) -> int:
    value = float(num)
    if value <= 0:
        raise ValueError(f"{where}: a scene must last more than 0; received {num} {unit}.")
    if unit.lower().startswith("f"):
        if value != int(value):
            raise ValueError(f"{where}: a duration in frames must be a whole number; received {num} {unit}.")
        return int(value)
    try:
        return _frames(value, fps)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def parse_story(text: str, *, fps: float, default_seconds: float = 4.0, max_seconds: float = MAX_STORY_SECONDS) -> list[Scene]:
    """Scenes with durations in base frames (at ``fps``). Raises ``ValueError`` naming the line at fault."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "The story is empty: write one prompt per line (optionally with a duration like '| 4s'), "
            'keyframes like "0": "...", "48": "...", or a paragraph of sentences.'
        )
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number; received {fps!r}.")
    if not (isinstance(default_seconds, (int, float)) and math.isfinite(default_seconds) and default_seconds > 0):
        raise ValueError(f"The default scene duration must be more than 0 seconds; received {default_seconds!r}.")
    if _KEYFRAME.match(text):
        scenes = _parse_keyframes(text, fps, default_seconds)
    else:
        lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.strip().startswith("#")]
        if len(lines) == 1 and not _has_duration(lines[0][1]) and "|" not in lines[0][1]:
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
    if "|" in line:  # a '|' that is not followed by a duration: a typo rather than part of the prompt
        tail = line.rsplit("|", 1)[1].strip()
        raise ValueError(
            f"{where}: '| {tail}' is not a duration. Write the duration as '| 4s' (seconds) or '| 48f' (frames), "
            "or remove the '|'."
        )
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
    for (a, _, ia), (b, _, ib) in zip(keys, keys[1:]):
        if b < a:
            raise ValueError(
                f"Keyframe {ib} (frame {b}) comes after keyframe {ia} (frame {a}): list keyframes in order of their frames."
            )
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


def _check_change_context(change_context: int | None, window: int) -> None:
    if change_context is not None and not 0 <= change_context < window:
        raise ValueError(
            f"change_context must be in [0, window) = [0, {window}) (or None: the same as context); received {change_context}."
        )


def plan_windows(scenes: list[Scene], window: int = 16, context: int = 4, change_context: int | None = None) -> list[Window]:
    """Windows of ``window`` frames: the first ``context`` are the last finished frames (none for the
    very first window), the rest are new. A scene change always starts a new window, so every
    window's new frames belong to one scene; its first window takes ``change_context`` finished frames
    (None: ``context``). Work grows linearly with the story's length."""
    if window < 2 or not 0 <= context < window:
        raise ValueError(f"Need window >= 2 and 0 <= context < window; received window={window}, context={context}.")
    _check_change_context(change_context, window)
    plan, pos = [], 0
    for si, scene in enumerate(scenes):
        left = scene.frames
        first_of_scene = True
        while left > 0:
            want = change_context if first_of_scene and si > 0 and change_context is not None else context
            ctx = min(want, pos)  # scenes shorter than the context: only what is finished so far
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
    # finished frames the first window of a new scene is conditioned on (None: context). One frame keeps
    # where the object is and lets the new prompt change its shape and motion, which 4 frames carry over
    # from the old scene (README, story mode: 35 of 48 changed scenes right against 30 of 48)
    change_context: int | None = 1
    anchor: bool = False  # also show the first frame of the current scene (slot 0)

    def __post_init__(self) -> None:
        if self.transition not in ("cut", "blend"):
            raise ValueError(f"transition must be 'cut' or 'blend'; received {self.transition!r}.")
        if self.transition_frames < 1:
            raise ValueError("transition_frames must be >= 1.")
        if not 0 <= self.context_noise <= 1:
            raise ValueError("context_noise must be in [0, 1].")
        _check_change_context(self.change_context, self.window)


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
    only the last ``context`` frames (+ the scene's anchor frame) and one window.

    Every window is one call of :func:`cascade.pipeline.generate` with all of ``options`` (sampler,
    guidance, thresholding, seed): its known frames are the finished context, its noise is keyed
    by the absolute frame index (so the story seed alone decides the story), the known frames are
    augmented at ``story.context_noise``, and a blended scene change passes both prompts as
    :class:`~cascade.guidance.FramePrompts`."""
    cfg = base.config
    require_role(base, "base", "Story generation")
    check_options(base, options)
    h, w_ = height or cfg.height, width or cfg.width
    plan = plan_windows(scenes, story.window, story.context, story.change_context)
    if not cfg.continuation:
        log.warning(
            "%s has no known-frame channels: story mode falls back to the training-free replacement method "
            "(expect weaker continuity). Fine-tune the base with continuation for best results.",
            base.source or cfg.name,
        )
    texts: dict[int, TextEmbedding] = {}
    window_options = replace(options, aug_level=story.context_noise)
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
        known = torch.zeros(shape)
        mask = torch.zeros(1, frames)
        if win.context:
            known[:, :, : win.context] = last[:, :, -win.context :].to(known)
            mask[:, : win.context] = 1
        if story.anchor and anchor is not None and win.context:
            known[:, :, 0] = anchor.to(known)
            mask[:, 0] = 1
        betas = _betas(win, story, frames)
        text = texts[win.scene] if betas is None else FramePrompts((texts[win.prev_scene], texts[win.scene]), betas)
        out = generate(
            base,
            text,
            frames=frames,
            height=h,
            width=w_,
            options=window_options,
            known=known if (win.context or cfg.continuation) else None,
            known_mask=mask if (win.context or cfg.continuation) else None,
            frame_offset=win.start - win.context,
            replacement=True,
            progress=_window_progress(progress, win.index, len(plan), options.steps),
        )
        new = out[:, :, win.context : win.context + win.new]
        if anchor is None:
            anchor = new[:, :, 0].clone()
        keep = max(story.context, story.change_context or 0, 1)
        last = (new if last is None else torch.cat([last, new], dim=2))[:, :, -keep:]
        yield new, win.scene


def _window_progress(progress, index: int, windows: int, steps: int):
    """generate's ``(done, total, preview)`` as story progress ``(window, windows, step)``."""
    if progress is None:
        return None

    def report(done, total, preview):
        if preview is not None:  # once per step
            progress(index, windows, min(steps, max(1, round(done * steps / max(1, total)))))

    return report


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
        self.factor = round(output_fps(stage.config, 1.0, multiplier))  # frames out per frame in
        self.scale = scale
        self.buf: torch.Tensor | None = None  # pending input frames (1, 3, n, h, w)
        self.buf_start = 0  # absolute input index of buf[0]
        self.tail: torch.Tensor | None = None  # output of the previous chunk's overlap, to crossfade
        self.emitted_in = 0  # input frames whose outputs were emitted

    def _run(self, frames: torch.Tensor, start: int) -> torch.Tensor:
        text = self.text_at(start + frames.shape[2] // 2)
        return upsample(
            self.stage, frames, text, options=self.options, frame_offset=start, multiplier=self.factor, scale=self.scale
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
    base: Stage | None,
    encode: Callable[[list[str]], TextEmbedding],
    tsr: Stage | None = None,
    ssr: Stage | None = None,
    options: dict[str, SamplingOptions],
    story: StoryOptions = StoryOptions(),
    sink: Callable[[torch.Tensor, int], None],
    sr_chunk: int = 16,
    sr_overlap: int = 4,
    progress: Callable[[str, int, int], None] | None = None,
    seed: int | None = None,
    base_frames: Iterable[tuple[torch.Tensor, int]] | None = None,
) -> dict:
    """Generate the whole story through the cascade, handing finished frames (``(1, 3, n, H, W)`` in
    [-1, 1]) and their scene index to ``sink`` as they are made. Returns timing per scene.
    ``seed``: the story's seed; each stage then samples with its :func:`~cascade.seeds.stage_seed`
    (without it, the seeds in ``options`` are used as they are). ``base_frames``: the base's
    ``(frames, scene)`` stream from another base (Phenaki's :func:`cascade.phenaki.story_frames`)
    instead of the diffusion base's windows; ``base`` is then unused."""
    import time

    if seed is not None:
        options = {k: v.for_stage(seed, k) for k, v in options.items()}
    for stage, key in ((base, "base"), (tsr, "tsr"), (ssr, "ssr")):  # refuse bad settings before any work
        if stage is not None and not (key == "base" and base_frames is not None):
            check_options(stage, options[key])

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
        f = round(output_fps(tsr.config, 1.0)) if tsr is not None else 1
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
    if base_frames is None:
        base_frames = story_base_frames(
            base,
            scenes,
            encode,
            options=options["base"],
            story=story,
            progress=(lambda w, n, s: progress("base", w, n)) if progress else None,
        )
    for frames, si in base_frames:
        push(0, frames)
        now = time.perf_counter()
        scene_time[si] = scene_time.get(si, 0.0) + now - t_last
        t_last = now
    flush(0)
    return {"seconds_per_scene": [round(scene_time.get(i, 0.0), 2) for i in range(len(scenes))], "frames": emitted[0]}


def _frame_scale(stages: list[StreamingSR]) -> int:
    return math.prod(s.factor for s in stages)
