"""Issue 12's distilled-cascade figure: the fewest network evaluations per video whose cascade
still reads all four attributes right within 5 points of the default teacher cascade.

Each configuration names, per stage, a file (a key of the demo's files, or a path) and its step
count; a student samples with the students' options (``STUDENT_OPTIONS``), a teacher with the default ones
(``DEFAULT_OPTIONS``), each at the given steps. Every configuration runs on the evaluation's
prompts and seeds (``python -m cascade evaluate``'s defaults), so its videos pair with the default
cascade's, which is measured in the same run unless ``--reference`` gives an earlier evaluation's
``results.json`` of the default cascade (same prompts, seeds and files: the same videos).

    python benchmarks/fast_cascade_sweep.py --reference docs/eval_2026-12-05/cpu_cascade64/results.json \\
        --config base_distilled:8,tsr_distilled:2,ssr_distilled:2 --config base_distilled:8,tsr_distilled:2,ssr:16

Writes ``<out>/results.json`` and ``<out>/results.md`` (one row per configuration, fewest evaluations first).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.demo import DEMO_DIR  # noqa: E402
from cascade.evaluate import EvalConfig, _evaluations_per_step, _Evaluator  # noqa: E402
from cascade.run import DEFAULT_OPTIONS, STUDENT_OPTIONS  # noqa: E402
from cascade.samplers import SAMPLERS  # noqa: E402

ROLES = ("base", "tsr", "ssr")
DEFAULT = "base:32,tsr:16,ssr:16"


def parse_config(text: str) -> list[tuple[str, int, str | None]]:
    """``"base_distilled:8,tsr_distilled:2,ssr:16"`` -> ``[(file or key, steps, sampler or None), ...]`` in the
    order base, TSR, SSR; ``FILE:STEPS:SAMPLER`` (e.g. ``base_distilled:2:ddim``) overrides that stage's sampler."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise SystemExit(f"A configuration names three stages (base, TSR, SSR) as FILE:STEPS; received {text!r}.")
    out = []
    for p in parts:
        sampler = None
        head, sep, last = p.rpartition(":")
        if sep and last in SAMPLERS:
            p, sampler = head, last
        name, sep, steps = p.rpartition(":")
        if not sep or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(
                f"Each stage is FILE:STEPS (or FILE:STEPS:SAMPLER, a sampler of {', '.join(SAMPLERS)}) with a positive "
                f"step count; received {p!r} in {text!r}."
            )
        out.append((name, int(steps), sampler))
    return out


def run_config(ev: _Evaluator, config: list[tuple[str, int, str | None]], tag: str, splits) -> dict:
    keys, opts, nfe = [], {}, {}
    for role, (name, steps, sampler) in zip(ROLES, config):
        key = name
        if key not in ev.files:  # a path: registered under itself
            if not Path(name).exists():
                raise SystemExit(f"{name} is neither one of the demo's files ({', '.join(ev.files)}) nor an existing file.")
            ev.files[key] = str(Path(name).resolve())
        stage = ev.stage(key)
        if stage is None:
            raise SystemExit(f"{ev.root / ev.files[key]} is missing.")
        distilled = stage.config.is_distilled
        o = replace((STUDENT_OPTIONS if distilled else DEFAULT_OPTIONS)[role], steps=steps)
        if sampler is not None:
            o = replace(o, sampler=sampler)
        keys.append(key)
        opts[role] = o
        nfe[role] = steps * (1 if distilled else _evaluations_per_step(o))
    t0 = time.time()
    res = ev.cascade_with(tuple(keys), opts, tag, splits)
    stages = [f"{k}:{s}" + (f":{m}" if m else "") for k, (_, s, m) in zip(keys, config)]
    return {"stages": stages, "nfe": nfe, "seconds": round(time.time() - t0, 1), **res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", required=True, help="base:STEPS,tsr:STEPS,ssr:STEPS (files or demo keys)")
    ap.add_argument("--reference", help="an evaluation's results.json with the default cascade (else it is measured here)")
    ap.add_argument("--models", default=str(DEMO_DIR))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--splits", default="seen,held_out")
    ap.add_argument("--cache", help="the evaluation's base-video cache folder (shared with `evaluate --cache`)")
    ap.add_argument("--within", type=float, default=5.0, help="points of the default cascade's all-four score")
    ap.add_argument("--out", default="runs/fast_cascade_sweep")
    a = ap.parse_args()
    splits = tuple(s.strip() for s in a.splits.split(","))
    if not splits or not set(splits) <= {"seen", "held_out"}:
        raise SystemExit(f"--splits takes seen and/or held_out (comma-separated); received {a.splits!r}.")
    configs = [parse_config(c) for c in a.config]  # all checked before any work
    ev = _Evaluator(EvalConfig(models=a.models, out=a.out, samples=a.samples, cache=a.cache, parts=("cascade",)))
    if a.reference:
        ref_results = json.loads(Path(a.reference).read_text())
        if "cascade" not in ref_results or not set(splits) <= set(ref_results["cascade"]):
            raise SystemExit(f"{a.reference} has no default-cascade results for {', '.join(splits)} (evaluate --parts cascade).")
        ref_cfg = ref_results["config"]
        if ref_cfg["samples"] != a.samples or ref_cfg["seed"] != ev.cfg.seed:
            raise SystemExit(f"{a.reference} used {ref_cfg['samples']} samples and seed {ref_cfg['seed']}: not these prompts.")
        ref = {"stages": DEFAULT.split(","), "nfe": {"base": 32, "tsr": 16, "ssr": 16}, **ref_results["cascade"]}
        ref["from"] = a.reference
    else:
        ref = run_config(ev, parse_config(DEFAULT), "_default", splits)
    rows = []
    for i, c in enumerate(configs):
        row = run_config(ev, c, f"_sweep{i}", splits)
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = lambda r: sum(r["nfe"].values())  # noqa: E731
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["within"] = all(r[s]["cascade"]["all"] >= ref[s]["cascade"]["all"] - a.within / 100 for s in splits)
        r["fewer_evaluations"] = round(total(ref) / total(r), 2)
    (out / "results.json").write_text(json.dumps({"reference": ref, "rows": rows, "within_points": a.within}, indent=1))
    head = " / ".join(splits)
    lines = [
        f"| cascade (file:steps) | evaluations per video | fewer than the default | all four right, {head} | "
        f"shape, {head} | s per video, {head} | within {a.within:g} points |",
        "|---|---|---|---|---|---|---|",
    ]
    pct = lambda r, k: " / ".join(f"{100 * r[s]['cascade'][k]:.0f} %" for s in splits)  # noqa: E731
    secs = lambda r: " / ".join(f"{r[s]['seconds_per_video']:.2f}" for s in splits)  # noqa: E731
    lines.append(
        f"| default: {', '.join(ref['stages'])} | {total(ref)} | 1x | {pct(ref, 'all')} | {pct(ref, 'shape')} | {secs(ref)} | - |"
    )
    for r in sorted(rows, key=total):
        lines.append(
            f"| {', '.join(r['stages'])} | {total(r)} | {r['fewer_evaluations']}x | {pct(r, 'all')} | {pct(r, 'shape')} | "
            f"{secs(r)} | {'yes' if r['within'] else 'no'} |"
        )
    ok = [r for r in rows if r["within"]]
    best = min(ok, key=total) if ok else None
    lines.append("")
    lines.append(
        f"Fewest evaluations within {a.within:g} points: "
        + (
            f"{', '.join(best['stages'])}, {total(best)} per video, {best['fewer_evaluations']}x fewer."
            if best
            else "none of these."
        )
    )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
