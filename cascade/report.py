"""The evaluation report: markdown tables from ``results.json`` (quoted in the README), and the
merge of evaluations run part by part."""

from __future__ import annotations

import json
from pathlib import Path

from .data.shapes import HELD_OUT
from .metrics import ATTRS

__all__ = ["merge", "report"]


def merge(out: str | Path, runs: list[str | Path]) -> dict:
    """Merge the ``results.json`` of evaluations run part by part (``--parts``) into one report in
    ``out``; sections present in several runs (``distilled`` per stage) are combined."""
    merged: dict = {"seconds": 0.0}
    for run in runs:
        r = json.loads((Path(run) / "results.json").read_text())
        for k, v in r.items():
            if k == "seconds":
                merged[k] += v
            elif k != "config":
                merged[k] = {**merged[k], **v} if isinstance(v, dict) and k in merged else v
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(merged, indent=1))
    (out / "report.md").write_text(report(merged))
    return merged


def _pct(x) -> str:
    return f"{100 * x:.0f} %"


def report(r: dict) -> str:
    """The markdown evaluation report (tables quoted in the README)."""
    lines = ["# Demo cascade evaluation", "", f"Held-out (colour, shape, direction) triples: {sorted(HELD_OUT)}", ""]
    if r.get("detector"):
        lines += [
            "## Detector on ground truth",
            "",
            "| clips | colour | shape | direction | speed | all |",
            "|---|---|---|---|---|---|",
        ]
        for name, v in r["detector"].items():
            lines.append(f"| {name} (n={v['n']}) | " + " | ".join(_pct(v[k]) for k in (*ATTRS, "all")) + " |")
        lines.append("")
    if r.get("base"):
        lines += [
            "## Base prompt adherence vs guidance weight w",
            "",
            "| w | split | colour | shape | direction | speed | all | n |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for w, splits in r["base"].items():
            for split, v in splits.items():
                lines.append(f"| {w[2:]} | {split} | " + " | ".join(_pct(v[k]) for k in (*ATTRS, "all")) + f" | {v['n']} |")
        lines += ["", "Chance: colour 20 %, shape 33 %, direction 25 %, speed 50 %, all four 0.8 %.", ""]
    for key, title in (
        ("cascade", "Full cascade (base -> TSR -> SSR, 64x64, 32 frames) vs base alone"),
        ("cascade_fast", "Distilled cascade (8 steps per stage) vs distilled base alone"),
    ):
        if r.get(key):
            lines += [
                f"## {title}",
                "",
                "| split | cascade all | base all | cascade per attribute (c/s/d/v) | s per video |",
                "|---|---|---|---|---|",
            ]
            for split, v in r[key].items():
                c = v["cascade"]
                lines.append(
                    f"| {split} | {_pct(c['all'])} | {_pct(v['base']['all'])} | "
                    + "/".join(_pct(c[k]) for k in ATTRS)
                    + f" | {v['seconds_per_video']} |"
                )
            lines.append("")
    if r.get("ssr"):
        s = r["ssr"]
        lines += [
            "## SSR x2 (32 -> 64 px) on ground-truth low-res input",
            "",
            "| method | PSNR dB | SSIM |",
            "|---|---|---|",
            f"| bilinear | {s['bilinear_psnr']:.2f} | {s['bilinear_ssim']:.3f} |",
            f"| bicubic | {s['bicubic_psnr']:.2f} | {s['bicubic_ssim']:.3f} |",
            f"| **SSR (ours)** | **{s['psnr']:.2f}** | **{s['ssim']:.3f}** |",
            "",
            f"Gain over bicubic: {s['gain_over_bicubic_db']:+.2f} dB. Consistency (downsampled output vs input): {s['consistency_psnr']:.1f} dB.",
            "",
        ]
    if r.get("tsr"):
        t = r["tsr"]
        lines += [
            "## TSR x2 (16 -> 31 frames) on ground-truth input: PSNR of the inserted frames",
            "",
            "| method | PSNR dB |",
            "|---|---|",
            f"| frame repetition | {t['repeat_psnr_inserted']:.2f} |",
            f"| linear blending | {t['blend_psnr_inserted']:.2f} |",
            f"| **TSR (ours)** | **{t['psnr_inserted']:.2f}** |",
            "",
            f"Gain over linear blending: {t['gain_over_blend_db']:+.2f} dB.",
            "",
        ]
    if r.get("distilled"):
        d = r["distilled"]
        lines += ["## Distilled students vs teachers", ""]
        if "base teacher" in d:
            bt = d["base teacher"]
            lines += [
                "| base model | sampler | steps | evaluations / video | seen all | held-out all | paired PSNR vs teacher |",
                "|---|---|---|---|---|---|---|",
                f"| teacher | {bt.get('sampler', 'ddim').upper()} + CFG | {bt['steps']} | {bt['nfe_per_video']} | {_pct(bt['seen']['all'])} | {_pct(bt['held_out']['all'])} | - |",
            ]
            for k, row in d.items():
                if not k.startswith("base student"):
                    continue
                n = row["steps"]
                st = row["distilled_stochastic"]
                lines.append(
                    f"| student | distilled stochastic | {n} | {n} | {_pct(st['seen']['all'])} | {_pct(st['held_out']['all'])} | - |"
                )
                lines.append(
                    f"| student | DDIM | {n} | {n} | {_pct(row['ddim']['seen']['all'])} | - | {row['paired_psnr_vs_teacher']:.2f} dB |"
                )
                tf = row["teacher_ddim_same_steps"]
                lines.append(
                    f"| teacher | DDIM + CFG | {n} | {tf['nfe_per_video']} | {_pct(tf['seen']['all'])} | - | {tf['paired_psnr_vs_teacher']:.2f} dB |"
                )
            lines.append("")
        for role in ("ssr", "tsr"):
            if f"{role} student 8-step" in d:
                s, t = d[f"{role} student 8-step"], d[f"{role} teacher"]
                key = "psnr" if role == "ssr" else "psnr_inserted"
                lines.append(
                    f"- {role.upper()}: 8-step student {s[key]:.2f} dB vs ground truth with {s['nfe_per_video']} evaluations per video; "
                    f"teacher ({t['steps']} steps, w={t.get('guidance', 1):g}) {t[key]:.2f} dB with {t['nfe_per_video']}; "
                    "paired PSNR student vs teacher "
                    f"{s['paired_psnr_vs_teacher']:.2f} dB."
                )
        lines.append("")
    lines.append(f"Total evaluation time: {r.get('seconds', 0) / 60:.1f} min.")
    return "\n".join(lines) + "\n"
