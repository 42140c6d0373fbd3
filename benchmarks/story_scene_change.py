"""Does a story's new scene follow its prompt when it continues from the last scene? (README, story mode)

Two-scene base stories (the shipped base at its defaults, 30 base frames per scene, no SR stages): the first
scene's prompt is a training combination; the second either changes the shape (two of every three pairs) or keeps
colour and shape. For each ``--change-context`` (finished frames the new scene's first window is conditioned on;
``none`` = the story's ``context``, 4), the detector reads both scenes at 32 px:

* changed pairs: the second scene all four attributes right, and its shape right;
* kept pairs: colour and shape right in both scenes (the story benchmark's continuity);
* first scenes: all four right (the same for every setting: a sanity check).

    python benchmarks/story_scene_change.py --pairs 24 --seed 5 --change-context none,1,0
    python benchmarks/story_scene_change.py --pairs 48 --seed 6 --change-context none,1,2
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cascade.data.detector import detect  # noqa: E402
from cascade.data.shapes import all_attributes, caption  # noqa: E402
from cascade.demo import DEMO_DIR, DEMO_FILES  # noqa: E402
from cascade.frames import video_to_frames  # noqa: E402
from cascade.run import DEFAULT_OPTIONS  # noqa: E402
from cascade.stage import load_stage  # noqa: E402
from cascade.story import Scene, StoryOptions, story_base_frames  # noqa: E402
from cascade.text import load_text_encoder  # noqa: E402

SCENE_FRAMES = 30  # base frames: a 7.5 s scene of the story benchmark


def pairs_for(n: int, seed: int) -> list[tuple]:
    pool = all_attributes("train")
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        a, b = (pool[i] for i in rng.choice(len(pool), 2, replace=False))
        keep = len(out) % 3 == 2
        if keep:
            b = next((p for p in pool if p.colour == a.colour and p.shape == a.shape and p != a), None)
            if b is None:
                continue
        elif a.shape == b.shape:
            continue
        out.append((a, b, keep))
    return out


def run(base, encode, pairs, change_context: int | None) -> dict:
    r = {"changed": 0, "changed_all": 0, "changed_shape": 0, "kept": 0, "kept_both": 0, "first_all": 0}
    story = StoryOptions(change_context=change_context)
    for k, (a, b, keep) in enumerate(pairs):
        scenes = [Scene(caption(a, 0), SCENE_FRAMES), Scene(caption(b, 0), SCENE_FRAMES)]
        frames: dict[int, list] = {0: [], 1: []}
        for new, si in story_base_frames(
            base, scenes, encode, options=replace(DEFAULT_OPTIONS["base"], seed=100 + k), story=story
        ):
            frames[si].append(new)
        det = [detect(video_to_frames(torch.cat(frames[i], 2)[0]).numpy(), frame_step=2).as_tuple() for i in (0, 1)]
        first_ok, second_ok = det[0][:2] == a.as_tuple()[:2], det[1][:2] == b.as_tuple()[:2]
        r["first_all"] += det[0] == a.as_tuple()
        if keep:
            r["kept"] += 1
            r["kept_both"] += first_ok and second_ok
        else:
            r["changed"] += 1
            r["changed_all"] += det[1] == b.as_tuple()
            r["changed_shape"] += det[1][1] == b.shape
    return r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--change-context", default="none,1", help="comma list; none = the story's context (4)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = load_stage(DEMO_DIR / DEMO_FILES["base"])
    encode = load_text_encoder().encode
    pairs = pairs_for(a.pairs, a.seed)
    print(f"{a.pairs} two-scene stories (seed {a.seed}), the shipped base at its defaults\n")
    print(
        "| change_context | changed scenes: all four right | shape right | kept pairs: both right | first scenes: all four right | s |"
    )
    print("|---|---|---|---|---|---|")
    for v in a.change_context.split(","):
        cc = None if v.strip() == "none" else int(v)
        t0 = time.time()
        r = run(base, encode, pairs, cc)
        print(
            f"| {'none (4)' if cc is None else cc} | {r['changed_all']} / {r['changed']} | {r['changed_shape']} / {r['changed']} "
            f"| {r['kept_both']} / {r['kept']} | {r['first_all']} / {a.pairs} | {time.time() - t0:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
