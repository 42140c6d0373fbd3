"""Story-mode figures: a 20-scene story through the demo cascade on this machine.

    python benchmarks/story_figures.py [--story stories/shapes_20_scenes.txt] [--fast] [--scenes 20]

Measures, each long run in a fresh child process (peak memory = VmHWM of that process, reset at its start):
* wall time of the 20-scene story and of a 1-scene story, their peak memory and the ratio;
* time per scene from the first to the last scene;
* seams: mean absolute frame-to-frame difference at base-window boundaries inside a scene, at scene
  boundaries, and within windows (all on the final 64x64 frames);
* per-scene prompt adherence with the evaluation's detector vs single-prompt generation of the
  same prompts (same settings);
* continuity: where the next prompt keeps colour and shape, do they carry across the boundary.
Writes benchmarks/results/story_figures.{json,md}.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
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

from cascade.data.detector import detect  # noqa: E402
from cascade.data.shapes import COLOURS, DIRECTIONS, SHAPES, SPEEDS  # noqa: E402
from cascade.frames import video_to_frames  # noqa: E402
from cascade.story import StoryOptions, parse_story, plan_windows, run_story  # noqa: E402


def attrs_of(prompt: str) -> tuple:
    words = prompt.lower().replace(",", " ").split()
    pick = lambda vocab: next((w for w in words if w in vocab), None)  # noqa: E731
    return pick(COLOURS), pick(SHAPES), pick(DIRECTIONS), pick(SPEEDS)


def scenes_of(story_path: str):
    from cascade.demo import demo_stage_config

    return parse_story(Path(story_path).read_text(), fps=demo_stage_config("base").fps)


def child(story_path: str, scenes_limit: int, fast: bool, out: str) -> dict:
    from cascade.run import load_demo_cascade
    from cascade.video_io import VideoWriter

    reset_peak()  # a child starts with its parent's peak RSS
    cascade = load_demo_cascade(fast=fast)
    fps = cascade.base.config.fps
    scenes = parse_story(Path(story_path).read_text(), fps=fps)[:scenes_limit]
    factor = cascade.tsr.config.temporal_factor
    story = StoryOptions()
    diffs, last = [], None
    current: dict = {"scene": None, "frames": []}
    detections = []

    def close_scene():  # detect a finished scene, then drop its frames (memory stays bounded)
        if current["scene"] is not None:
            d = detect(np.concatenate(current["frames"]), frame_step=1)
            prompt = scenes[current["scene"]].prompt
            detections.append({"prompt": prompt, "expected": attrs_of(prompt), "detected": d.as_tuple()})

    t0 = time.perf_counter()
    with VideoWriter(out, fps * factor) as w:

        def sink(frames, scene):
            nonlocal last
            f = video_to_frames(frames)  # (n, H, W, 3)
            w.write(f)
            seq = f if last is None else torch.cat([last, f])
            diffs.extend((seq[1:] - seq[:-1]).abs().mean(dim=(1, 2, 3)).tolist())
            last = f[-1:]
            if scene != current["scene"]:
                close_scene()
                current.update(scene=scene, frames=[])
            current["frames"].append((f * 255).round().byte().numpy())

        r = run_story(
            scenes,
            base=cascade.base,
            encode=cascade.encoder.encode,
            tsr=cascade.tsr,
            ssr=cascade.ssr,
            options=cascade.options,
            story=story,
            sink=sink,
            seed=0,
        )
    close_scene()
    seconds = time.perf_counter() - t0
    plan = plan_windows(scenes, story.window, story.context, story.change_context)
    window_starts = {w.start * factor for w in plan if w.prev_scene is None and w.start > 0}
    scene_starts = {w.start * factor for w in plan if w.prev_scene is not None}
    # diffs[i] is the change from frame i to frame i+1; a boundary at frame b is diffs[b-1]
    at_window = [diffs[b - 1] for b in window_starts]
    at_scene = [diffs[b - 1] for b in scene_starts]
    inside = [d for i, d in enumerate(diffs) if (i + 1) not in window_starts | scene_starts]
    return {
        "scenes": len(scenes),
        "frames": r["frames"],
        "seconds": round(seconds, 1),
        "seconds_per_scene": r["seconds_per_scene"],
        "peak_rss_mb": round(peak_mb(), 1),
        "seam_window_mean": float(np.mean(at_window)) if at_window else None,
        "seam_scene_mean": float(np.mean(at_scene)) if at_scene else None,
        "within_mean": float(np.mean(inside)),
        "detections": detections,
    }


def single_prompt_adherence(prompts: list[str], fast: bool) -> list[dict]:
    from cascade.run import load_demo_cascade

    cascade = load_demo_cascade(fast=fast)
    out = []
    for i, p in enumerate(prompts):
        frames, _ = cascade(p, seed=1000 + i)
        d = detect(frames.numpy(), frame_step=1)
        out.append({"prompt": p, "expected": attrs_of(p), "detected": d.as_tuple()})
    return out


def _sr_step() -> int:
    """Base frames between two SR chunks of run_story (its sr_chunk - sr_overlap defaults)."""
    p = inspect.signature(run_story).parameters
    return p["sr_chunk"].default - p["sr_overlap"].default


def timing(sps: list[float], wall: float, scene_frames: list[int]) -> dict:
    """Time per scene, read three ways. The SR stages emit a chunk every ``sr_step`` base frames
    (run_story's sr_chunk - sr_overlap), so when a scene's length is not a multiple of it, scenes
    alternately trigger more or fewer SR chunks: the cost repeats with a period of ``period``
    scenes. Per period the time should be flat; the fitted trend says whether it grows."""
    sps = [float(x) for x in sps]
    n, sr_step = len(sps), _sr_step()
    period = sr_step // math.gcd(sr_step, scene_frames[0]) if len(set(scene_frames)) == 1 else 1
    periods = [sum(sps[i : i + period]) for i in range(0, n - n % period, period)]
    slope, icept = np.polyfit(np.arange(n), sps, 1) if n > 1 else (0.0, sps[0])
    steady = periods[1:] or periods
    med = float(np.median(steady))
    return {
        "period_scenes": period,
        "period_seconds": [round(x, 2) for x in periods],
        "period_spread_after_first": max(abs(x - med) for x in steady) / med,
        "trend_first_to_last": float(slope * (n - 1) / icept) if n > 1 else 0.0,
        "unattributed_seconds": round(wall - sum(sps), 1),  # the SR flush after the last window, file close
    }


def continuity(detections: list[dict]) -> tuple[int, float | None]:
    """Boundaries whose two prompts keep colour and shape, and the fraction of them where the detector
    reads the prompt's colour and shape on both sides (detections may come back from JSON as lists)."""
    ok = lambda d: tuple(d["detected"][:2]) == tuple(d["expected"][:2])  # noqa: E731
    pairs = [
        (a, b)
        for a, b in zip(detections, detections[1:])
        if tuple(a["expected"][:2]) == tuple(b["expected"][:2]) and None not in a["expected"][:2]
    ]
    return len(pairs), (float(np.mean([ok(a) and ok(b) for a, b in pairs])) if pairs else None)


def score(rows: list[dict]) -> dict:
    keys = ("colour", "shape", "direction", "speed")
    acc = {k: float(np.mean([r["detected"][i] == r["expected"][i] for r in rows])) for i, k in enumerate(keys)}
    acc["all"] = float(np.mean([tuple(r["detected"]) == tuple(r["expected"]) for r in rows]))
    return acc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--story", default=str(ROOT / "stories" / "shapes_20_scenes.txt"))
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--scenes", type=int, default=20, help="how many scenes of the story the long run takes")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    ap.add_argument("--child", nargs=3, metavar=("SCENES", "FAST", "VIDEO"))
    ap.add_argument("--report", metavar="JSON", help="only rewrite the markdown report of an earlier run's JSON")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.report:
        r = json.loads(Path(a.report).read_text())
        long = r["runs"][str(r["scenes"])]
        if "timing" not in r:  # runs from before the timing breakdown
            frames = [sc.frames for sc in scenes_of(a.story)][: r["scenes"]]
            r["timing"] = timing(long["seconds_per_scene"], long["seconds"], frames)
        r["continuity_pairs"], r["continuity_carried"] = continuity(long["detections"])
        Path(a.report).write_text(json.dumps(r, indent=1))
        Path(a.report).with_suffix(".md").write_text(report(r))
        print(report(r))
        return 0
    if a.child:
        print(json.dumps(child(a.story, int(a.child[0]), a.child[1] == "1", a.child[2])))
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for n in (1, a.scenes):
        video = out / f"story_{n}_scene{'s' if n > 1 else ''}{'_fast' if a.fast else ''}.mp4"
        r = subprocess.run(
            [
                sys.executable,
                __file__,
                "--story",
                a.story,
                "--threads",
                str(a.threads),
                "--child",
                str(n),
                "1" if a.fast else "0",
                str(video),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs[n] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{n} scene(s): {runs[n]['seconds']} s, peak {runs[n]['peak_rss_mb']} MiB", flush=True)
    long = runs[a.scenes]
    prompts = [d["prompt"] for d in long["detections"]]
    single = single_prompt_adherence(prompts, a.fast)
    sps = long["seconds_per_scene"]
    pairs, carried = continuity(long["detections"])
    result = {
        "story": Path(a.story).name,
        "fast": a.fast,
        "threads": a.threads,
        "runs": runs,
        "scenes": a.scenes,
        "peak_memory_ratio_long_vs_1": long["peak_rss_mb"] / runs[1]["peak_rss_mb"],
        "time_first_scene_s": sps[0],
        "time_last_scene_s": sps[-1],
        "time_per_scene_spread": (max(sps[1:-1] or sps) - min(sps[1:-1] or sps)) / float(np.median(sps)),
        "timing": timing(sps, long["seconds"], [sc.frames for sc in scenes_of(a.story)][: a.scenes]),
        "seam_ratio_window": long["seam_window_mean"] / long["within_mean"] if long["seam_window_mean"] else None,
        "seam_ratio_scene": long["seam_scene_mean"] / long["within_mean"] if long["seam_scene_mean"] else None,
        "adherence_story": score(long["detections"]),
        "adherence_single_prompt": score(single),
        "continuity_pairs": pairs,
        "continuity_carried": carried,
    }
    (out / f"story_figures{'_fast' if a.fast else ''}.json").write_text(json.dumps(result, indent=1))
    md = report(result)
    (out / f"story_figures{'_fast' if a.fast else ''}.md").write_text(md)
    print(md)
    return 0


def report(r: dict) -> str:
    runs = {int(k): v for k, v in r["runs"].items()}  # int keys, also when read back from the JSON
    long, one = runs[r.get("scenes", 20)], runs[1]
    s, p, t = r["adherence_story"], r["adherence_single_prompt"], r["timing"]
    return "\n".join(
        [
            f"Story `{r['story']}` through the demo cascade{' (its fast path)' if r['fast'] else ''}: "
            f"{long['scenes']} scenes, {long['frames']} frames at 64x64 (8 fps, {long['frames'] / 8 / 60:.1f} min).",
            "",
            "| figure | measured | target |",
            "|---|---|---|",
            f"| wall time, {long['scenes']} scenes / 1 scene | {long['seconds'] / 60:.1f} min / {one['seconds']:.0f} s | - |",
            f"| peak memory, {long['scenes']} scenes / 1 scene | {long['peak_rss_mb']:.0f} / {one['peak_rss_mb']:.0f} MiB = **{r['peak_memory_ratio_long_vs_1']:.2f}x** | <= 1.2x |",
            f"| time per scene, first / last (spread of the middle scenes) | {r['time_first_scene_s']:.1f} s / {r['time_last_scene_s']:.1f} s "
            f"({100 * r['time_per_scene_spread']:.0f} %) | within +-15 % |",
            f"| time per {t['period_scenes']} scenes (the SR chunk cadence), first / last (largest deviation from the median after the first) | "
            f"{t['period_seconds'][0]:.1f} s / {t['period_seconds'][-1]:.1f} s ({100 * t['period_spread_after_first']:.0f} %) | within +-15 % |",
            f"| fitted trend of time per scene, first to last scene | {100 * t['trend_first_to_last']:+.0f} % | - |",
            f"| seam at window boundaries inside a scene / within windows | **{r['seam_ratio_window']:.2f}x** | <= 1.5x |",
            f"| change at scene boundaries / within windows | {r['seam_ratio_scene']:.2f}x | - |",
            f"| per-scene adherence, all four attributes: story / single prompt | {100 * s['all']:.0f} % / {100 * p['all']:.0f} % | within 10 points |",
            f"| per attribute (colour, shape, direction, speed): story | {', '.join(f'{100 * s[k]:.0f} %' for k in ('colour', 'shape', 'direction', 'speed'))} | |",
            f"| per attribute: single prompt | {', '.join(f'{100 * p[k]:.0f} %' for k in ('colour', 'shape', 'direction', 'speed'))} | |",
            f"| continuity: colour and shape carried where the next prompt keeps them | {100 * (r['continuity_carried'] or 0):.0f} % of {r['continuity_pairs']} boundaries | |",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
