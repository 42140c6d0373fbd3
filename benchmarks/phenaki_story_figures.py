"""Story figures of Phenaki's own story mode (the demo Phenaki, base frames 32x32 at 4 fps).

    python benchmarks/phenaki_story_figures.py [--story stories/shapes_20_scenes.txt] [--scenes 20]

Each story runs in a fresh child process (peak memory = VmHWM of that process, reset at its start):
* wall time and peak memory of the 20-scene story and of a 1-scene story, and their ratio;
* seams: mean absolute frame-to-frame change where a clip continues the last one (the context is
  re-encoded and its tokens kept) inside a scene, at scene boundaries, and within clips;
* per-scene prompt adherence with the evaluation's detector vs single-prompt clips of the same
  prompts (same sampling settings), and continuity across boundaries that keep colour and shape.
Writes benchmarks/results/phenaki_story_figures.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import peak_mb, reset_peak  # noqa: E402
from story_figures import attrs_of, continuity, score  # noqa: E402

from cascade.data.detector import detect  # noqa: E402
from cascade.frames import video_to_frames  # noqa: E402
from cascade.story import parse_story  # noqa: E402


def load():
    from cascade.demo import PHENAKI_DEMO_DIR, PHENAKI_DEMO_FILES
    from cascade.phenaki import load_phenaki
    from cascade.text import load_text_encoder

    ph = load_phenaki(*[PHENAKI_DEMO_DIR / PHENAKI_DEMO_FILES[k] for k in ("tokenizer", "transformer")])
    return ph, load_text_encoder("minilm")


def frame_step(ph) -> int:
    from cascade.train import frame_skip_for

    return frame_skip_for(ph.info.fps, "shapes")


def child(story_path: str, scenes_limit: int) -> dict:
    from cascade.phenaki import PhenakiOptions, story_frames

    reset_peak()  # a child starts with its parent's peak RSS
    ph, enc = load()
    scenes = parse_story(Path(story_path).read_text(), fps=ph.info.fps)[:scenes_limit]
    diffs, last, scene_frames, detections = [], None, [], []
    clip_starts, scene_starts, n = [], [], 0
    t0 = time.perf_counter()
    prev_scene = None
    for out, si in story_frames(ph, scenes, enc.encode, PhenakiOptions()):
        f = video_to_frames(out)  # (n, H, W, 3) in [0, 1]
        if last is not None:
            (scene_starts if si != prev_scene else clip_starts).append(n)
        if si != prev_scene and scene_frames:  # a scene is finished: detect it, then drop its frames
            detections.append(_detect(scene_frames, scenes[prev_scene].prompt, ph))
            scene_frames = []
        seq = f if last is None else torch.cat([last, f])
        diffs.extend((seq[1:] - seq[:-1]).abs().mean(dim=(1, 2, 3)).tolist())
        last, prev_scene = f[-1:], si
        n += f.shape[0]
        scene_frames.append((f * 255).round().byte().numpy())
    seconds = time.perf_counter() - t0
    detections.append(_detect(scene_frames, scenes[prev_scene].prompt, ph))
    # diffs[i] is the change from frame i to frame i + 1; a clip starting at frame b is diffs[b - 1]
    at_clip = [diffs[b - 1] for b in clip_starts]
    at_scene = [diffs[b - 1] for b in scene_starts]
    starts = set(clip_starts) | set(scene_starts)
    inside = [d for i, d in enumerate(diffs) if (i + 1) not in starts]
    return {
        "scenes": len(scenes),
        "frames": n,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb(), 1),
        "seam_clip_mean": float(np.mean(at_clip)) if at_clip else None,
        "seam_scene_mean": float(np.mean(at_scene)) if at_scene else None,
        "within_mean": float(np.mean(inside)),
        "detections": detections,
    }


def _detect(chunks, prompt, ph) -> dict:
    d = detect(np.concatenate(chunks), frame_step=frame_step(ph))
    return {"prompt": prompt, "expected": attrs_of(prompt), "detected": d.as_tuple()}


def single_prompt_adherence(prompts: list[str]) -> list[dict]:
    from cascade.phenaki import PhenakiOptions

    ph, enc = load()
    o = PhenakiOptions()
    frames = ph.tokenizer.config.frames(ph.info.steps)
    out = []
    for i, p in enumerate(prompts):
        v = ph.generate(enc.encode([p]), frames, steps=o.steps, w=o.w, temperature=o.temperature, seed=1000 + i)
        f = (video_to_frames(v) * 255).round().byte().numpy()
        out.append({"prompt": p, "expected": attrs_of(p), "detected": detect(f, frame_step=frame_step(ph)).as_tuple()})
    return out


def run_child(story: str, scenes: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--story", story, "--threads", str(threads), "--child", str(scenes)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def report(r: dict) -> str:
    long, one = r["long"], r["one"]
    ratio = long["peak_rss_mb"] / one["peak_rss_mb"]
    story, single = score(long["detections"]), score(r["single"])
    pairs, cont = continuity(long["detections"])
    pct = lambda x: f"{100 * x:.0f} %"  # noqa: E731
    return "\n".join(
        [
            f"Story `{Path(r['story']).name}` through the demo Phenaki (its own story mode, base frames): {long['scenes']} "
            f"scenes, {long['frames']} frames at 32x32 (4 fps).",
            "",
            "| figure | measured | target |",
            "|---|---|---|",
            f"| wall time, {long['scenes']} scenes / 1 scene | {long['seconds']:.0f} s / {one['seconds']:.1f} s | - |",
            f"| peak memory, {long['scenes']} scenes / 1 scene | {long['peak_rss_mb']:.0f} / {one['peak_rss_mb']:.0f} MiB = "
            f"**{ratio:.2f}x** | <= 1.2x |",
            f"| change where a clip continues the last (same scene) / within clips | "
            f"**{long['seam_clip_mean'] / long['within_mean']:.2f}x** | <= 1.5x |",
            f"| change at scene boundaries / within clips | **{long['seam_scene_mean'] / long['within_mean']:.2f}x** | <= 1.5x |",
            f"| per-scene adherence, all four attributes: story / single prompt | {pct(story['all'])} / {pct(single['all'])} | "
            "within 10 points |",
            "| per attribute (colour, shape, direction, speed): story | "
            + ", ".join(pct(story[k]) for k in ("colour", "shape", "direction", "speed"))
            + " | |",
            "| per attribute: single prompt | "
            + ", ".join(pct(single[k]) for k in ("colour", "shape", "direction", "speed"))
            + " | |",
            f"| continuity: colour and shape carried where the next prompt keeps them | "
            f"{pct(cont) if cont is not None else '-'} of {pairs} boundaries | |",
            "",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--story", default=str(ROOT / "stories" / "shapes_20_scenes.txt"))
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--child", type=int, metavar="SCENES")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child is not None:
        print(json.dumps(child(a.story, a.child)))
        return 0
    long = run_child(a.story, a.scenes, a.threads)
    one = run_child(a.story, 1, a.threads)
    prompts = [d["prompt"] for d in long["detections"]]
    r = {"story": a.story, "long": long, "one": one, "single": single_prompt_adherence(prompts)}
    out = Path(a.out)
    (out / "phenaki_story_figures.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "phenaki_story_figures.md").write_text(report(r))
    print(report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
