"""Training step time of the demo base on this CPU: today's fp32 recipe vs the options that might
make it faster (the new patched recipe, bf16 autocast, channels-last, torch.compile).

    python benchmarks/train_step_speed.py [--rounds 3] [--steps 3] [--threads 1] [--compile]

Each option is a real ``Trainer`` step of the demo recipe (batch building, text encoding, v-loss,
backward, AdamW, EMA), built once; rounds are interleaved so a busy machine slows every option
alike. Reported: median seconds per step and per training item, and the ratio to today's fp32
step of the shipped base recipe. bf16 is only measured where the CPU has AVX-512-BF16 or AMX
(``/proc/cpuinfo``); elsewhere fp32 stays the only sensible choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.checkpoint import read_stage_config  # noqa: E402
from cascade.demo import DEMO_DIR, DEMO_FILES, demo_train_config  # noqa: E402
from cascade.text import load_text_encoder  # noqa: E402
from cascade.train import Trainer  # noqa: E402


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def build(name: str, tmp: Path, enc, *, old: bool, precision: str = "no", channels_last: bool = False, compile_: bool = False):
    # accelerate's CPU bf16 is torch.autocast("cpu", bfloat16) around the forward; its state is a
    # process-wide singleton, so the benchmark applies the same autocast itself around each step
    over = {"out": str(tmp / name), "checkpoint_every": 0, "binding_every": 0, "log_every": 10**9}
    cfg = demo_train_config("base", **over)
    if old:  # the shipped base's network and recipe (batch 8, 1 in 8 items a packed still)
        shipped = read_stage_config(DEMO_DIR / DEMO_FILES["base"])
        cfg = dataclasses.replace(
            cfg, stage=shipped, batch=8, image_fraction=0.125, continuation_mix=(0.75, 0.15, 0.05, 0.05), max_known=8
        )
    tr = Trainer(cfg, encoder=enc)
    if channels_last:  # the 2-D convolutions' weights (the temporal ones are 1-D)
        for m in tr.net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.to(memory_format=torch.channels_last)
    if compile_:
        tr.model = torch.compile(tr.model)
    if precision == "bf16":
        step = tr.train_step

        def bf16_step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return step()

        tr.train_step = bf16_step
    return tr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per option per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile on a CPU)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step_speed.md"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    flags = cpu_flags()
    bf16_ok = bool({"avx512_bf16", "amx_bf16"} & flags)
    enc = load_text_encoder("minilm")
    tmp = Path(tempfile.mkdtemp())
    options = {
        "today: shipped base recipe, fp32": dict(old=True),
        "new recipe (patch 2, batch 16), fp32": dict(old=False),
        "new recipe, fp32, channels-last": dict(old=False, channels_last=True),
    }
    if bf16_ok:
        options["new recipe, bf16 autocast"] = dict(old=False, precision="bf16")
        options["new recipe, bf16 autocast, channels-last"] = dict(old=False, precision="bf16", channels_last=True)
    if a.compile:
        options["new recipe, fp32, torch.compile"] = dict(old=False, compile_=True)
    trainers, warm = {}, {}
    for name, kw in options.items():
        trainers[name] = build(name.replace(" ", "_").replace(",", "").replace(":", ""), tmp, enc, **kw)
        t0 = time.time()
        trainers[name].train_step()  # warm-up (and compilation)
        warm[name] = time.time() - t0
        print(f"built {name}: first step {warm[name]:.1f} s", flush=True)
    times: dict[str, list[float]] = {n: [] for n in options}
    for r in range(a.rounds):
        for name, tr in trainers.items():
            t0 = time.time()
            for _ in range(a.steps):
                tr.train_step()
            times[name].append((time.time() - t0) / a.steps)
        print(f"round {r + 1}: " + ", ".join(f"{n}: {times[n][-1]:.2f}" for n in options), flush=True)
    ref = statistics.median(times["today: shipped base recipe, fp32"]) / 8
    rows, data = [], {}
    for name, tr in trainers.items():
        med = statistics.median(times[name])
        per_item = med / tr.cfg.batch
        data[name] = {
            "batch": tr.cfg.batch,
            "step_s": times[name],
            "median_step_s": med,
            "per_item_s": per_item,
            "first_step_s": warm[name],
        }
        rows.append(
            f"| {name} | {tr.cfg.batch} | {med:.2f} ({min(times[name]):.2f}-{max(times[name]):.2f}) | {per_item:.3f} | {per_item / ref:.2f}x | {warm[name]:.1f} |"
        )
    md = [
        "# Demo base training step time (CPU)",
        "",
        f"`python benchmarks/train_step_speed.py {' '.join(sys.argv[1:])}`: torch {torch.__version__}, {a.threads} thread(s), "
        f"{a.rounds} interleaved rounds of {a.steps} steps; CPU bf16 instructions: "
        f"{', '.join(sorted({'avx512_bf16', 'amx_bf16', 'amx_tile'} & flags)) or 'none'}.",
        "",
        "| option | batch | s / step, median (min-max) | s / item | per item vs today | first step s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
