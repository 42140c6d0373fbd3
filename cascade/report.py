"""The evaluation report: markdown tables from ``results.json`` (quoted in the README), and the
merge of evaluations run part by part."""

from __future__ import annotations

import json
from pathlib import Path

from .data.shapes import HELD_OUT
from .metrics import ATTRS
from .run import FAST_OPTIONS

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


def _cfg(nfe: int, steps: int) -> str:
    """ " + CFG" for a guided teacher (two evaluations per step), nothing for an unguided one."""
    return " + CFG" if nfe == 2 * steps else ""


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
        (
            "cascade_fast",
            "Fast cascade (the students: base {base}, TSR {tsr}, SSR {ssr} steps) vs the base student alone".format(
                **{role: o.steps for role, o in FAST_OPTIONS.items()}
            ),
        ),
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
    for key, title in (("story", "Story mode (two-scene stories)"), ("story_fast", "Story mode, fast path")):
        if r.get(key):
            lines += _story_section(r[key], title)
    if r.get("phenaki"):
        lines += _phenaki_section(r["phenaki"])
    if r.get("ssr"):
        lines += _ssr_section(r["ssr"])
    if r.get("tsr"):
        lines += _tsr_section(r["tsr"])
    if r.get("distilled"):
        d = r["distilled"]
        lines += ["## Distilled students vs teachers", ""]
        if "base teacher" in d:
            bt = d["base teacher"]
            lines += [
                "| base model | sampler | steps | evaluations / video | seen all | held-out all | paired PSNR vs teacher |",
                "|---|---|---|---|---|---|---|",
                f"| teacher | {bt.get('sampler', 'ddim').upper()}{_cfg(bt['nfe_per_video'], bt['steps'])} | {bt['steps']} | {bt['nfe_per_video']} | {_pct(bt['seen']['all'])} | {_pct(bt['held_out']['all'])} | - |",
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
                    f"| teacher | DDIM{_cfg(tf['nfe_per_video'], n)} | {n} | {tf['nfe_per_video']} | {_pct(tf['seen']['all'])} | - | {tf['paired_psnr_vs_teacher']:.2f} dB |"
                )
            lines.append("")
        for role in ("ssr", "tsr"):
            if f"{role} teacher" not in d:
                continue
            t = d[f"{role} teacher"]
            key = "psnr" if role == "ssr" else "psnr_inserted"
            lines += [
                f"| {role.upper()} | steps | evaluations / video | PSNR vs ground truth | vs teacher | paired PSNR vs teacher |",
                "|---|---|---|---|---|---|",
                f"| teacher (w={t.get('guidance', 1):g}) | {t['steps']} | {t['nfe_per_video']} | {t[key]:.2f} dB | - | - |",
            ]
            for k, s in d.items():
                if k.startswith(f"{role} student "):
                    n = k.split()[-1]
                    who = f"student ({s['sampler'].replace('_', ' ')})" if "sampler" in s else "student"
                    lines.append(
                        f"| {who} | {n.removesuffix('-step')} | {s['nfe_per_video']} | {s[key]:.2f} dB | {s[key] - t[key]:+.2f} dB | "
                        f"{s['paired_psnr_vs_teacher']:.2f} dB |"
                    )
                    if "teacher_same_steps" in s:  # the undistilled teacher at the student's step count
                        f = s["teacher_same_steps"]
                        lines.append(
                            f"| teacher, DDIM | {n.removesuffix('-step')} | {f['nfe_per_video']} | {f[key]:.2f} dB | "
                            f"{f[key] - t[key]:+.2f} dB | {f['paired_psnr_vs_teacher']:.2f} dB |"
                        )
            lines.append("")
        lines.append("")
    lines.append(f"Total evaluation time: {r.get('seconds', 0) / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def _story_section(s: dict, title: str) -> list[str]:
    c = s["continuity"]
    lines = [
        f"## {title}",
        "",
        f"{s['stories']} stories of two {s['scene_base_frames']}-frame base scenes, the second keeping the first's colour and"
        " shape; each scene read on the final video, and each prompt generated alone.",
        "",
        "| scenes | all four right | colour / shape / direction / speed | n |",
        "|---|---|---|---|",
    ]
    for k, name in (
        ("story", "in the stories"),
        ("story_first_scenes", "first scenes"),
        ("story_second_scenes", "second scenes (after the boundary)"),
        ("alone", "the same prompts alone"),
    ):
        v = s[k]
        lines.append(f"| {name} | {_pct(v['all'])} | " + " / ".join(_pct(v[a]) for a in ATTRS) + f" | {v['n']} |")
    lines += [
        "",
        f"Continuity at {c['boundaries']} boundaries: the prompts' colour and shape on both sides "
        f"{_pct(c['right_both_sides'])}; the same colour and shape read on both sides {_pct(c['same_both_sides'])}.",
        f"Seconds per story {s['seconds_per_story']}, per video alone {s['seconds_per_video_alone']}.",
        "",
    ]
    return lines


SR_SET_TITLES = {
    "seen": "training-like clips",
    "fast": "motion 2x the fastest trained",
    "slow": "slow motion (half the slowest trained)",
    "unlike": "other backgrounds, colours and sizes",
}


def _sr_sets(res: dict) -> list[tuple[str, dict]]:
    return [("seen", res)] + list(res.get("sets", {}).items())


def _ssr_section(s: dict) -> list[str]:
    lines = [
        "## SSR x2 (32 -> 64 px) on ground-truth low-res input",
        "",
        f"Noise augmentation at sampling {s.get('aug_level', 0.3):g}; projection onto the input "
        f"{'on' if s.get('consistency') else 'off'}; n = {s['n']} clips per set.",
        "",
        "| clips | bilinear | bicubic | Lanczos-3 | **SSR (ours)** | gain vs bicubic | vs Lanczos | consistency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in _sr_sets(s):
        lanczos = f"{v['lanczos_psnr']:.2f} / {v['lanczos_ssim']:.3f}" if "lanczos_psnr" in v else "-"
        vs_lanczos = f"{v['gain_over_lanczos_db']:+.2f} dB" if "gain_over_lanczos_db" in v else "-"
        lines.append(
            f"| {SR_SET_TITLES.get(name, name)} | {v['bilinear_psnr']:.2f} / {v['bilinear_ssim']:.3f} | "
            f"{v['bicubic_psnr']:.2f} / {v['bicubic_ssim']:.3f} | {lanczos} | **{v['psnr']:.2f} / {v['ssim']:.3f}** | "
            f"{v['gain_over_bicubic_db']:+.2f} dB | {vs_lanczos} | {v['consistency_psnr']:.1f} dB |"
        )
    lines += [
        "",
        "PSNR dB / SSIM against the ground truth; consistency: the output downsampled back vs the input (PSNR).",
        "",
    ]
    return lines


def _tsr_section(t: dict) -> list[str]:
    lines = [
        "## TSR x2 (16 -> 31 frames) on ground-truth input: the inserted frames",
        "",
        f"Noise augmentation at sampling {t.get('aug_level', 0.3):g}; projection onto the input "
        f"{'on' if t.get('consistency') else 'off'}; n = {t['n']} clips per set.",
        "",
        "| clips | frame repetition | linear blending | optical flow | **TSR (ours)** | gain vs blending | vs flow | consistency |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(v: dict, p: str) -> str:
        if f"{p}psnr_inserted" not in v:
            return "-"
        pos = v.get(f"{p}position_error_px")
        ssim_ = v.get(f"{p}ssim_inserted")
        extra = "" if ssim_ is None else f" / {ssim_:.3f}"
        extra += "" if pos is None else f" / {pos:.2f} px"
        return f"{v[f'{p}psnr_inserted']:.2f}{extra}"

    for name, v in _sr_sets(t):
        vs_flow = f"{v['gain_over_flow_db']:+.2f} dB" if "gain_over_flow_db" in v else "-"
        consistency = f"{v['consistency_psnr']:.1f} dB" if "consistency_psnr" in v else "-"
        lines.append(
            f"| {SR_SET_TITLES.get(name, name)} | {cell(v, 'repeat_')} | {cell(v, 'blend_')} | {cell(v, 'flow_')} | "
            f"**{cell(v, '')}** | {v['gain_over_blend_db']:+.2f} dB | {vs_flow} | {consistency} |"
        )
    lines += [
        "",
        "PSNR dB / SSIM / object-position error (pixels; a faded or ghosted object counts as half the diagonal) "
        "on the inserted frames; consistency: the output's input-rate frames vs the input (PSNR).",
        "",
    ]
    return lines


def _phenaki_section(p: dict) -> list[str]:
    t = p["tokenizer"]
    lines = [
        "## Phenaki base (C-ViViT + MaskGIT)",
        "",
        f"Tokenizer on {t['n']} ground-truth clips of {t['frames']} frames: PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f}; "
        f"{t['tokens_per_clip']} tokens per clip against {t['tokens_per_clip_per_frame_tokenizer']} for a per-frame tokenizer "
        f"with the same patch ({t['codebook_size']} codes).",
        "",
        f"Sampling: {p['steps']} MaskGIT steps, w = {p['guidance']:g} ({p['nfe_per_video']} network evaluations per video).",
        "",
        "| split | colour | shape | direction | speed | all four | s per video | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in ("seen", "held_out", "train_phrasing", "held_out_phrasing"):
        if split in p:
            a = p[split]
            lines.append(
                f"| {split} | "
                + " | ".join(_pct(a[k]) for k in ATTRS)
                + f" | {_pct(a['all'])} | {a['seconds_per_video']} | {a['n']} |"
            )
    return lines + [""]
