import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import tiny_unet

from cascade.config import StageConfig
from cascade.data.detector import detect
from cascade.data.shapes import HELD_OUT, Attributes, all_attributes, caption, render_clip
from cascade.demo import DEMO_FILES
from cascade.diffusion import ddim_step, distillation_target
from cascade.distill import DistillConfig, distill, guided_student_from, round_schedule, student_indices
from cascade.evaluate import EvalConfig, evaluate, psnr, ssim
from cascade.pipeline import SamplingOptions
from cascade.run import DEFAULT_OPTIONS, FAST_FILES, FAST_OPTIONS, STUDENT_OPTIONS
from cascade.stage import Stage, load_stage
from cascade.text import TextEmbedding

ROOT = Path(__file__).resolve().parent.parent


def minilm_stage(role, seed=0, **kw) -> Stage:
    cond = {"base": 4, "ssr": 3, "tsr": 4}[role]
    extra = {"ssr": {"spatial_factor": 2.0, "height": 16, "width": 16}, "tsr": {"temporal_factor": 2}}.get(role, {})
    fields = {
        "frames": 4,
        "height": 8,
        "width": 8,
        "text_dim": 384,
        "text_encoder": "sentence-transformers/all-MiniLM-L6-v2",
        "continuation": role == "base",
        **extra,
        **kw,
    }
    cfg = StageConfig(role=role, unet=tiny_unet(cond_channels=cond, aug_cond=True, text_dim=384), **fields)
    stage = Stage(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in stage.net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return stage


def small_distillation(tmp_path, role, **kw) -> DistillConfig:
    """A tiny teacher of ``role`` saved under ``tmp_path`` and a two-round distillation of it (8 -> 2 steps)."""
    minilm_stage(role).save(tmp_path / "teacher.safetensors")
    fields = dict(teacher_steps=8, target_steps=2, guided_steps=2, steps_per_round=2, batch=2, log_every=1)
    return DistillConfig(teacher=str(tmp_path / "teacher.safetensors"), out=str(tmp_path / "out"), **{**fields, **kw})


def test_round_schedule():
    assert round_schedule(64, 8) == [32, 16, 8]
    assert round_schedule(16, 2) == [8, 4, 2]
    assert round_schedule(16, 2, step_ratio=8) == [2]
    assert round_schedule(64, 4, step_ratio=4) == [16, 4]
    with pytest.raises(ValueError, match="power of two"):
        DistillConfig(teacher="x", teacher_steps=48, target_steps=8)
    with pytest.raises(ValueError, match="power of step_ratio 4"):
        DistillConfig(teacher="x", teacher_steps=16, target_steps=2, step_ratio=4)
    with pytest.raises(ValueError, match="step_ratio must be a power of two"):
        DistillConfig(teacher="x", teacher_steps=9, target_steps=1, step_ratio=3)


def test_a_step_ratio_round_starts_from_init_student_and_learns_the_teachers_steps(tmp_path, monkeypatch):
    """--step-ratio 4 is one round 8 -> 2 whose student starts from --init-student; its targets are
    four DDIM steps of the teacher per student step."""
    import cascade.distill as distill_module

    first = distill(small_distillation(tmp_path, "tsr"))  # 8 -> 4 -> 2 by halving
    paths_seen = []

    def recording_target(teacher, x, s, *path, **cond):
        paths_seen.append(len(path))
        return distillation_target(teacher, x, s, *path, **cond)

    monkeypatch.setattr(distill_module, "distillation_target", recording_target)
    cfg = replace(
        small_distillation(tmp_path, "tsr"), out=str(tmp_path / "ratio"), step_ratio=4, init_student=str(first[-1]), lr=1e-12
    )
    paths = distill(cfg)
    assert [p.name for p in paths] == ["student_8step.safetensors", "student_2step.safetensors"]
    assert paths_seen == [4, 4]  # two optimiser steps, four teacher steps each
    init, guided = (load_stage(p, role="tsr").net.state_dict() for p in (first[-1], first[0]))
    got = load_stage(paths[-1], role="tsr").net.state_dict()
    # the round's student moved 1e-12 from its init, not from a copy of its 8-step teacher
    assert max(float((init[k] - got[k]).abs().max()) for k in init) < 1e-6
    assert max(float((guided[k] - got[k]).abs().max()) for k in init) > 1e-5
    log = [json.loads(x) for x in (tmp_path / "ratio" / "log.jsonl").read_text().splitlines()]
    assert {r["round"] for r in log} == {"guided", "2-step"}


def test_a_refine_grid_round_learns_every_kth_time_of_its_teachers_grid_and_its_student_samples_it(tmp_path, monkeypatch):
    """--refine-from 0.2: the teacher's 8-step grid is 1, 0.2, 0.171, ... 0.029; each round's student
    learns every second time of it and records its own grid, which sampling then uses."""
    import cascade.distill as distill_module
    from cascade.schedule import grid_times

    seen = []

    def recording_target(teacher, x, s, *path, **cond):
        seen.append(torch.stack([s, *path], 1))
        return distillation_target(teacher, x, s, *path, **cond)

    monkeypatch.setattr(distill_module, "distillation_target", recording_target)
    cfg = replace(small_distillation(tmp_path, "ssr"), refine_from=0.2, steps_per_round=6, batch=3)
    paths = distill(cfg)
    sched = load_stage(paths[0], role="ssr").config.schedule
    sigma = lambda times: torch.cat([sched.vesigma(times).float(), torch.zeros(1)])  # noqa: E731
    teacher8, grid4 = sigma(grid_times(8, refine_from=0.2)), sigma(grid_times(4, refine_from=float(grid_times(8, 1.0, 0.2)[2])))
    # the 4-step round's targets: two teacher steps between neighbouring times of the 8-step grid
    for row in torch.cat(seen[:6]):
        i = int(torch.argmin((teacher8 - row[0]).abs()))
        assert i % 2 == 0 and torch.allclose(row, teacher8[i : i + 3], rtol=1e-4), (row, teacher8)
    refine = [load_stage(p, role="ssr").config.distillation.refine_from for p in paths]
    assert refine[0] == pytest.approx(0.2) and refine[1] == pytest.approx(float(grid_times(8, 1.0, 0.2)[2]))
    assert refine[2] == pytest.approx(float(grid_times(4, 1.0, refine[1])[2]))
    student4 = load_stage(paths[1], role="ssr")
    assert torch.allclose(SamplingOptions(steps=4).grid(student4), grid4, rtol=1e-5)
    assert torch.allclose(grid4[:-1], teacher8[:-1][::2], rtol=1e-5)  # every second time of the teacher's grid


def test_init_student_must_be_a_student_of_the_teacher(tmp_path):
    cfg = small_distillation(tmp_path, "tsr")
    with pytest.raises(ValueError, match="is not a student of"):
        distill(replace(cfg, init_student=cfg.teacher))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        distill(replace(cfg, init_student=str(tmp_path / "missing.safetensors")))


def test_guided_student_starts_as_the_conditional_teacher():
    teacher = minilm_stage("base")
    student = guided_student_from(teacher)
    assert student.config.unet.guidance_cond
    z = torch.randn(1, 3, 4, 8, 8)
    cond = torch.zeros(1, 4, 4, 8, 8)
    t = TextEmbedding(torch.randn(1, 3, 384), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 384))
    a = teacher.net(z, torch.zeros(1), text=t, cond=cond, aug_logsnr=torch.ones(1))
    b = student.net(z, torch.zeros(1), text=t, cond=cond, aug_logsnr=torch.ones(1), guidance=torch.full((1,), 5.0))
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("role", ["base", "tsr", "ssr"])
def test_distill_writes_students_that_record_what_they_were_distilled_for(tmp_path, role):
    cfg = small_distillation(tmp_path, role, w_min=0.0, w_max=4.0)
    paths = distill(cfg)
    assert [p.name for p in paths] == ["student_8step.safetensors", "student_4step.safetensors", "student_2step.safetensors"]
    st = load_stage(paths[-1], role=role)
    d = st.config.distillation
    assert d.steps == (2,) and d.guided and (d.w_min, d.w_max) == (0.0, 4.0) and d.teacher == "teacher.safetensors"
    assert d.teacher_steps == 8 and d.sampler == "distilled_stochastic"
    log = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert {r["round"] for r in log} == {"guided", "4-step", "2-step"}
    # resuming skips finished rounds
    assert distill(cfg) == []


def test_a_time_limit_shortens_every_round_to_what_fits_and_anneals_it(tmp_path):
    teacher = minilm_stage("tsr")
    teacher.save(tmp_path / "teacher.safetensors")
    cfg = DistillConfig(
        teacher=str(tmp_path / "teacher.safetensors"),
        out=str(tmp_path / "out"),
        teacher_steps=4,
        target_steps=1,
        guided_steps=40,
        steps_per_round=40,
        batch=1,
        log_every=100,
        time_limit=1e-9,
    )
    paths = distill(cfg)
    assert [p.name for p in paths] == [f"student_{n}step.safetensors" for n in (4, 2, 1)]
    log = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    # each round stopped after its 10 probing steps (nothing more fit), and logged its end
    assert [(r["round"], r["step"], r["of"]) for r in log] == [("guided", 10, 10), ("2-step", 10, 10), ("1-step", 10, 10)]


def test_distillation_clips_default_to_the_teachers_training_frame_rate(tmp_path):
    """Clips play at the teacher's frame rate: the shapes renderer's 8 fps reference rate over the
    stage's fps (the demo base at 4 fps sees every 2nd frame, the SR stages at 8 fps every frame)."""
    from cascade.distill import _Distiller

    for role, fps, expected in (("base", 4.0, 2), ("tsr", 8.0, 1), ("base", 2.0, 4)):
        minilm_stage(role, fps=fps).save(tmp_path / f"{role}{fps}.safetensors")
        d = _Distiller(DistillConfig(teacher=str(tmp_path / f"{role}{fps}.safetensors"), out=str(tmp_path / role)))
        assert d.data_cfg.frame_skip == expected
    d = _Distiller(DistillConfig(teacher=str(tmp_path / "base4.0.safetensors"), out=str(tmp_path / "b3"), frame_skip=3))
    assert d.data_cfg.frame_skip == 3


def test_progressive_round_reduces_the_distillation_loss(tmp_path):
    """A round of progressive distillation makes the student match two teacher steps far better
    (the logged loss is the weighted distance to the two-step target on fresh batches)."""
    from cascade.distill import _Distiller

    teacher = minilm_stage("tsr")
    teacher.save(tmp_path / "t.safetensors")
    cfg = DistillConfig(
        teacher=str(tmp_path / "t.safetensors"),
        out=str(tmp_path / "o"),
        teacher_steps=4,
        target_steps=2,
        guided_steps=1,
        steps_per_round=150,
        batch=2,
        lr=2e-3,
        log_every=25,
    )
    d = _Distiller(cfg)
    d.progressive(guided_student_from(d.teacher), 2)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("role", ["tsr", "ssr"])
def test_consistency_distillation_projects_teacher_and_student_onto_the_input(tmp_path, role):
    """``consistency``: the teacher's and the student's predictions are projected onto what the SR
    input determines (TSR: the input frames; SSR: the output scaled back down), the student's loss
    differentiates through it, and the student file records it (files distilled without it keep
    their old metadata)."""
    from cascade.conditioning import resize_video
    from cascade.distill import _Distiller

    cfg = small_distillation(tmp_path, role, teacher_steps=4, consistency=True)
    d = _Distiller(cfg)
    x, *_, project = d.batch(0, salt=1)
    data_low = x[:, :, ::2] if role == "tsr" else resize_video(x, (8, 8))
    y = project(torch.randn_like(x))
    if role == "tsr":
        assert torch.allclose(y[:, :, ::2], data_low, atol=1e-5)
    else:
        assert psnr(((resize_video(y, (8, 8)) + 1) / 2).clamp(0, 1), (data_low + 1) / 2) > 25.0
    z = torch.randn_like(x, requires_grad=True)
    project(z).square().sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    paths = distill(cfg)
    assert load_stage(paths[-1], role=role).config.distillation.consistency
    off = DistillConfig(**{**cfg.__dict__, "out": str(tmp_path / "off"), "consistency": False})
    st = load_stage(distill(off)[-1], role=role)
    assert not st.config.distillation.consistency and "consistency" not in st.config.distillation.to_dict()


def test_consistency_distillation_refuses_a_stage_without_a_projection(tmp_path):
    minilm_stage("base").save(tmp_path / "b.safetensors")
    from cascade.distill import _Distiller

    with pytest.raises(ValueError, match="has none.*--no-consistency"):
        _Distiller(DistillConfig(teacher=str(tmp_path / "b.safetensors"), out=str(tmp_path / "o"), consistency=True))


def test_detector_reads_ground_truth_and_rejects_blank():
    import numpy as np

    rng = np.random.default_rng(0)
    ok = 0
    attrs = all_attributes()
    for i in range(60):
        a = attrs[(i * 7) % len(attrs)]
        d = detect(render_clip(a, frames=16, size=32, rng=rng, frame_step=2), frame_step=2)
        ok += d.as_tuple() == a.as_tuple()
    assert ok >= 59
    assert detect(np.zeros((8, 32, 32, 3), dtype=np.uint8)).as_tuple() == (None, None, None, None)


def test_detector_reads_shape_through_a_generators_artefacts():
    """A dimmer object on a lighter background, with grain: what a generated video shows. The
    shape stays readable (the first detector read it at chance here)."""
    import numpy as np

    rng, noise = np.random.default_rng(1), np.random.default_rng(2)
    attrs = all_attributes()
    ok = 0
    for i in range(30):
        a = attrs[(i * 11) % len(attrs)]
        v = render_clip(a, frames=16, size=32, rng=rng, frame_step=2).astype(np.float32) / 255
        v = np.clip(v * 0.8 + 0.1 + noise.normal(0, 0.04, v.shape), 0, 1)
        ok += detect(v, frame_step=2).as_tuple() == a.as_tuple()
    assert ok >= 27, ok


def test_vocabulary_and_held_out_split():
    held = all_attributes("held_out")
    assert len(held) == 12 and all(a.held_out for a in held)
    assert len(HELD_OUT) / 60 == pytest.approx(0.1)
    train = all_attributes("train")
    for field in ("colour", "shape", "direction"):
        assert {getattr(a, field) for a in train} == {getattr(a, field) for a in all_attributes()}
    assert caption(Attributes("red", "circle", "right", "quickly"), 0) == "a red circle moving right quickly"


def test_evaluation_prompts_spread_over_the_whole_split():
    from collections import Counter

    from cascade.evaluate import _prompts

    seen = _prompts("seen", 64, 1234)
    assert len(set(seen)) == 64  # fewer than the pool: no repeats
    assert {a.colour for a in seen} == set(Counter(a.colour for a in all_attributes("train")))  # not just the first colours
    assert max(Counter(a.colour for a in seen).values()) <= 20  # about 64 / 5 each
    twice = _prompts("held_out", 24, 0)
    assert Counter(twice) == Counter(all_attributes("held_out") * 2)  # every held-out combination twice
    assert _prompts("seen", 64, 1234) == seen and _prompts("seen", 64, 1235) != seen


def test_psnr_ssim():
    a = torch.rand(1, 3, 2, 16, 16)
    assert psnr(a, a) > 100 and ssim(a, a) == pytest.approx(1.0, abs=1e-4)
    assert psnr(a, (a + 0.1).clamp(0, 1)) < 25 and ssim(a, torch.rand_like(a)) < 0.5


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    for role in ("base", "tsr", "ssr"):
        minilm_stage(role).save(d / DEMO_FILES[role])
        st = guided_student_from(minilm_stage(role))
        from cascade.config import DistillationInfo

        # the base and SSR students support a second step count, like the shipped ones (base 2, 4, 8; SSR 1, 2, 4)
        steps = (STUDENT_OPTIONS[role].steps, *{"base": (8,), "ssr": (4,)}.get(role, ()))
        Stage(st.config.replace(distillation=DistillationInfo(steps=steps, w_max=8.0)), st.net).save(
            d / DEMO_FILES[role + "_distilled"]
        )
    # another TSR student beside the demo's (the evaluation finds it by its name), distilled for DDIM
    st = guided_student_from(minilm_stage("tsr"))
    Stage(st.config.replace(distillation=DistillationInfo(steps=(8,), w_max=8.0, sampler="ddim")), st.net).save(
        d / DEMO_FILES["tsr"].replace(".safetensors", "_distilled_8step.safetensors")
    )
    return d


def test_evaluate_writes_results_and_report(tmp_path, demo_dir):
    r = evaluate(EvalConfig(models=str(demo_dir), out=str(tmp_path / "eval"), samples=2, w_values=(0.0, 4.0), batch=2))
    assert r["detector"]["base 32px 16f"]["all"] == 1.0
    assert set(r["base"]) == {"w=0", "w=4"} and r["base"]["w=4"]["seen"]["n"] == 2
    assert {"psnr", "bicubic_psnr", "consistency_psnr"} <= set(r["ssr"])
    assert {"psnr_inserted", "blend_psnr_inserted", "repeat_psnr_inserted"} <= set(r["tsr"])
    base_opts = DEFAULT_OPTIONS["base"]  # the teacher at its defaults: a guided step costs two evaluations
    assert r["distilled"]["base teacher"]["nfe_per_video"] == base_opts.steps * (2 if base_opts.guidance.w else 1)
    b, t, ss = (STUDENT_OPTIONS[role].steps for role in ("base", "tsr", "ssr"))  # the fast path's: 2, 1, 1
    # a student that supports two step counts is measured at both, most steps first
    assert [k for k in r["distilled"] if k.startswith("base student")] == ["base student 8-step", f"base student {b}-step"]
    assert (
        r["distilled"]["base student 8-step"]["nfe_per_video"] == 8
        and r["distilled"][f"base student {b}-step"]["nfe_per_video"] == b
    )
    # the students' teachers are the parts at their default settings (same clips and seeds)
    assert r["distilled"]["ssr teacher"]["psnr"] == r["ssr"]["psnr"]
    assert r["distilled"]["tsr teacher"]["psnr_inserted"] == r["tsr"]["psnr_inserted"]
    assert [k for k in r["distilled"] if k.startswith("tsr student")] == ["tsr student 8-step", f"tsr student {t}-step"]
    assert r["distilled"][f"tsr student {t}-step"]["nfe_per_video"] == t
    assert [k for k in r["distilled"] if k.startswith("ssr student")] == ["ssr student 4-step", f"ssr student {ss}-step"]
    assert r["distilled"]["ssr student 4-step"]["nfe_per_video"] == 4
    # each student samples with the sampler its file says it was distilled for
    assert r["distilled"]["tsr student 8-step"]["sampler"] == "ddim"
    assert r["distilled"][f"tsr student {t}-step"]["sampler"] == "distilled_stochastic"
    # beside each student, the undistilled teacher at the same step count (what a user has without it)
    same = r["distilled"][f"tsr student {t}-step"]["teacher_same_steps"]
    assert same["nfe_per_video"] == t and {"psnr_inserted", "paired_psnr_vs_teacher"} <= set(same)
    default_w = r["base"][f"w={base_opts.guidance.w:g}"]
    assert r["distilled"]["base teacher"]["seen"] == {k: v for k, v in default_w["seen"].items() if k != "seconds"}
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Base prompt adherence" in report and "SSR x2" in report and "Distilled students" in report
    assert f"| student (distilled stochastic) | {t} | {t} |" in report and f"| teacher, DDIM | {t} | {t} |" in report
    assert "| student (ddim) | 8 | 8 |" in report
    # the base teacher's rows say CFG only when it is guided (two evaluations per step)
    label = "DDIM + CFG" if base_opts.guidance.w else "DDIM"
    assert f"| teacher | {label} | {base_opts.steps} | {r['distilled']['base teacher']['nfe_per_video']} |" in report
    assert (tmp_path / "eval" / "base_seen.png").exists()
    # story mode, default and fast: two stories of two scenes, each scene read, each prompt also alone
    for key in ("story", "story_fast"):
        assert r[key]["stories"] == 2 and r[key]["continuity"]["boundaries"] == 2
        assert r[key]["story"]["n"] == r[key]["alone"]["n"] == 4 and r[key]["story_second_scenes"]["n"] == 2
    assert "Story mode (two-scene stories)" in report and "Story mode, fast path" in report
    assert (tmp_path / "eval" / "story.png").exists()


@pytest.mark.parametrize("parts", [("storyy",), ("cascade", "ssr_fast"), ()])
def test_an_unknown_evaluation_part_is_refused_before_any_work(tmp_path, parts):
    with pytest.raises(ValueError, match="evaluation part"):
        EvalConfig(models=str(tmp_path), parts=parts)


def test_story_pairs_keep_colour_and_shape_and_move_another_way():
    from cascade.evaluate import _prompts, _story_pairs

    pairs = _story_pairs(64, 5)
    train = set(all_attributes("train"))
    assert [a for a, _ in pairs] == _prompts("seen", 64, 5)  # the first scenes spread like the evaluation's prompts
    for a, b in pairs:
        assert b in train and (b.colour, b.shape) == (a.colour, a.shape) and b.direction != a.direction
    assert _story_pairs(64, 5) == pairs and _story_pairs(64, 6) != pairs


def test_continuity_needs_the_prompts_colour_and_shape_on_both_sides():
    from cascade.evaluate import continuity

    a = [Attributes("red", "square", "left", "slowly")] * 4
    right, round_ = ("red", "square", "up", "quickly"), ("red", "circle", "up", "quickly")
    first = [right, right, round_, round_]
    second = [right, round_, right, round_]
    c = continuity(first, second, a)
    assert c == {"boundaries": 4, "right_both_sides": 0.25, "same_both_sides": 0.5}
    with pytest.raises(ValueError):
        continuity(first, second[:3], a)


@pytest.mark.parametrize("keep", [True, False])
def test_story_part_reads_each_scene_of_the_final_video_separately(tmp_path, demo_dir, monkeypatch, keep):
    """A story whose frames are ground truth of each scene's prompt (streamed in chunks that straddle the
    boundary, as the SR stages do): every scene reads right, and continuity is 1; a second scene that draws
    another shape reads wrong there, and continuity is 0."""
    import numpy as np

    import cascade.story
    from cascade.frames import frames_to_video

    def ground_truth_story(scenes, *, sink, seed, **kw):
        clips = []
        for i, sc in enumerate(scenes):
            words = sc.prompt.split()
            a = Attributes(words[1], words[2], words[4], words[5])
            if i == 1 and not keep:
                a = replace(a, shape="triangle" if a.shape != "triangle" else "circle")
            clips.append(frames_to_video(render_clip(a, frames=32, size=64, rng=np.random.default_rng(seed + i))))
        video = torch.cat(clips, dim=1)[None]
        for s in range(0, video.shape[2], 12):
            sink(video[:, :, s : s + 12], 0)
        return {"frames": video.shape[2], "seconds_per_scene": [0.0, 0.0]}

    monkeypatch.setattr(cascade.story, "run_story", ground_truth_story)
    r = evaluate(EvalConfig(models=str(demo_dir), out=str(tmp_path / "ev"), samples=4, batch=4, parts=("story_default",)))
    s = r["story"]
    assert "story_fast" not in r
    assert s["story_first_scenes"]["all"] == 1.0
    assert s["story_second_scenes"]["all"] == (1.0 if keep else 0.0)
    assert s["continuity"] == {"boundaries": 4, "right_both_sides": float(keep), "same_both_sides": float(keep)}
    # what was read on each side of each boundary, beside the prompts
    assert len(s["boundaries"]) == 4
    for b in s["boundaries"]:
        assert b["first"] == b["first_prompt"] and (b["first_prompt"][:2] == b["second_prompt"][:2])
        assert (b["second"] == b["second_prompt"]) == keep


@pytest.mark.gpu
def test_evaluate_on_a_gpu_matches_the_cpu(tmp_path, demo_dir):
    """``device``: the models run on the GPU, clips and metrics stay on the CPU; same figures."""
    kw = dict(models=str(demo_dir), samples=2, w_values=(4.0,), batch=2, parts=("base", "ssr", "tsr"), sr_sets=("seen",))
    cpu = evaluate(EvalConfig(out=str(tmp_path / "cpu"), **kw))
    gpu = evaluate(EvalConfig(out=str(tmp_path / "gpu"), device="cuda", **kw))
    assert gpu["base"]["w=4"]["seen"]["n"] == 2
    assert gpu["ssr"]["psnr"] == pytest.approx(cpu["ssr"]["psnr"], abs=0.5)
    assert gpu["tsr"]["psnr_inserted"] == pytest.approx(cpu["tsr"]["psnr_inserted"], abs=0.5)


def test_base_videos_shared_through_the_cache(tmp_path, demo_dir, monkeypatch):
    """Runs split over processes (--cache) compute the base videos once; another model file,
    other options or other prompts miss the cache."""
    from dataclasses import replace

    from cascade.evaluate import _Evaluator
    from cascade.run import DEFAULT_OPTIONS

    opts = replace(DEFAULT_OPTIONS["base"], steps=2)
    cfg = EvalConfig(models=str(demo_dir), out=str(tmp_path / "a"), samples=2, batch=2, cache=str(tmp_path / "cache"))
    first, _, _ = _Evaluator(cfg).split_videos("base", opts, "seen")
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("sampled again despite the cache")

    monkeypatch.setattr(_Evaluator, "base_videos", fail)
    again, _, _ = _Evaluator(replace(cfg, out=str(tmp_path / "b"))).split_videos("base", opts, "seen")
    assert torch.equal(first, again)
    for other in (replace(cfg, samples=3), replace(cfg, seed=1), replace(cfg, precision="bf16")):
        with pytest.raises(AssertionError, match="sampled again"):
            _Evaluator(other).split_videos("base", opts, "seen")
    with pytest.raises(AssertionError, match="sampled again"):
        _Evaluator(cfg).split_videos("base", replace(opts, steps=3), "seen")


def test_evaluate_loads_the_stages_in_the_precision_asked_and_refuses_a_bad_one_first(tmp_path, demo_dir):
    from cascade.evaluate import _Evaluator

    kw = dict(models=str(demo_dir), out=str(tmp_path / "e"), samples=2, batch=2)
    assert _Evaluator(EvalConfig(**kw)).stage("base").dtype == torch.float32  # the default: fp32, as every figure
    assert _Evaluator(EvalConfig(**kw, precision="bf16")).stage("ssr").dtype == torch.bfloat16
    assert _Evaluator(EvalConfig(**kw, precision="auto")).stage("tsr").dtype == torch.float32  # auto on the CPU
    with pytest.raises(ValueError, match="Unknown precision 'fp8'"):
        EvalConfig(**kw, precision="fp8")
    with pytest.raises(ValueError, match="Unknown device 'gpu0'"):
        EvalConfig(**kw, device="gpu0")


def test_generate_and_story_load_the_stages_in_the_precision_asked(tmp_path, demo_dir, monkeypatch):
    import cascade.run as run
    from cascade.cli import main
    from cascade.video_io import read_video

    seen = []
    real = run.load_stage

    def spy(*args, **kwargs):
        stage = real(*args, **kwargs)
        seen.append((stage.device.type, stage.dtype))
        return stage

    monkeypatch.setattr(run, "load_stage", spy)
    common = ["--models", str(demo_dir), "--fast"]
    assert main(["generate", "a red circle", "-o", str(tmp_path / "g.mp4"), *common, "--precision", "bf16"]) == 0
    assert seen == [("cpu", torch.bfloat16)] * 3
    seen.clear()
    assert main(["story", "a red circle | 1s", "-o", str(tmp_path / "s.mp4"), *common, "--device", "cpu"]) == 0
    assert seen == [("cpu", torch.float32)] * 3  # --precision auto: fp32 on the CPU, the videos of before
    for name in ("g.mp4", "s.mp4"):
        frames, _ = read_video(tmp_path / name)
        assert frames.shape[0] > 0 and frames.std() > 0


def test_generate_command_writes_a_playable_video(tmp_path, demo_dir):
    from cascade.video_io import read_video

    out = tmp_path / "out.mp4"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cascade",
            "generate",
            "a red circle moving right",
            "-o",
            str(out),
            "--models",
            str(demo_dir),
            "--steps",
            "2",
            "--sr-steps",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    frames, fps = read_video(out)
    assert frames.shape == (8, 16, 16, 3) and fps == pytest.approx(8.0)  # base 4 frames x2 (TSR), 8px x2 (SSR)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cascade",
            "generate",
            "a red circle",
            "-o",
            str(tmp_path / "f.mp4"),
            "--models",
            str(demo_dir),
            "--fast",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "cascade", "generate", " ", "-o", str(tmp_path / "e.mp4"), "--models", str(demo_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2 and "prompt is empty" in r.stderr  # refused before the models load


def test_evaluations_run_part_by_part_merge_into_one_report(tmp_path):
    from cascade.evaluate import merge

    tsr = {"psnr_inserted": 31.0, "blend_psnr_inserted": 35.0, "repeat_psnr_inserted": 30.0, "steps": 64, "nfe_per_video": 128}
    a = {"config": {"parts": ["tsr"]}, "seconds": 60.0, "distilled": {"tsr teacher": tsr}}
    b = {"config": {"parts": ["ssr"]}, "seconds": 120.0, "distilled": {"ssr teacher": {**tsr, "psnr": 21.0}}}
    for name, r in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    merged = merge(tmp_path / "all", [tmp_path / "a", tmp_path / "b"])
    assert merged["seconds"] == 180.0 and "config" not in merged
    assert set(merged["distilled"]) == {"tsr teacher", "ssr teacher"}
    assert "Total evaluation time: 3.0 min." in (tmp_path / "all" / "report.md").read_text()


def test_interpolation_baselines_for_any_factor():
    from cascade.metrics import blend_frames, inserted_indices, repeat_frames

    low = torch.arange(3, dtype=torch.float32).reshape(1, 1, 3, 1, 1).expand(1, 3, 3, 2, 2)
    assert blend_frames(low, 2)[0, 0, :, 0, 0].tolist() == [0.5, 1.5]
    assert blend_frames(low, 3)[0, 0, :, 0, 0].tolist() == pytest.approx([1 / 3, 2 / 3, 4 / 3, 5 / 3])
    assert repeat_frames(low, 3)[0, 0, :, 0, 0].tolist() == [0, 0, 1, 1]
    assert inserted_indices(7, 3) == [1, 2, 4, 5]


def test_fast_cascade_sweep_pairs_each_configuration_with_the_default(tmp_path, demo_dir, monkeypatch):
    """benchmarks/fast_cascade_sweep.py: the default cascade run as a configuration reproduces the
    default's videos (so it is within any margin, at 1x), and each row counts its evaluations."""
    import runpy

    script = str(Path(__file__).resolve().parent.parent / "benchmarks" / "fast_cascade_sweep.py")
    out = tmp_path / "sweep"
    args = ["--models", str(demo_dir), "--samples", "2", "--splits", "seen", "--out", str(out)]
    configs = ["--config", "base_distilled:2,tsr_distilled:1,ssr_distilled:1", "--config", "base:32,tsr:16,ssr:16"]
    monkeypatch.setattr(sys, "argv", ["fast_cascade_sweep.py", *args, *configs])
    runpy.run_path(script, run_name="__main__")
    r = json.loads((out / "results.json").read_text())
    fast, same = r["rows"]
    assert sum(fast["nfe"].values()) == 4 and fast["fewer_evaluations"] == 16
    assert same["seen"]["cascade"] == r["reference"]["seen"]["cascade"] and same["within"] and same["fewer_evaluations"] == 1
    assert "Fewest evaluations within 5 points" in (out / "results.md").read_text()
    # a configuration that is not three FILE:STEPS entries is refused before any work
    monkeypatch.setattr(sys, "argv", ["fast_cascade_sweep.py", *args, "--config", "base:32,tsr:16"])
    with pytest.raises(SystemExit, match="three stages"):
        runpy.run_path(script, run_name="__main__")
    monkeypatch.setattr(sys, "argv", ["fast_cascade_sweep.py", *args[:-4], "--splits", "unseen", *configs])
    with pytest.raises(SystemExit, match="--splits takes seen"):
        runpy.run_path(script, run_name="__main__")
    # FILE:STEPS:SAMPLER overrides one stage's sampler; a name that is no sampler is refused
    parse = runpy.run_path(script)["parse_config"]
    assert parse("base_distilled:2:ddim,tsr:16,x.safetensors:1") == [
        ("base_distilled", 2, "ddim"),
        ("tsr", 16, None),
        ("x.safetensors", 1, None),
    ]
    with pytest.raises(SystemExit, match="FILE:STEPS:SAMPLER"):
        parse("base_distilled:2:dpm,tsr:16,ssr:16")


def test_repeated_sr_edges_and_grain_tell_grain_from_blur():
    """benchmarks/repeated_sr.py's note metrics: the ground truth against itself has edges 1 and no
    grain; faint noise is grain (flat regions); ringing raises the edges, a blur lowers them a little
    and adds no grain."""
    import runpy

    import torch.nn.functional as F

    mod = runpy.run_path(str(Path(__file__).resolve().parent.parent / "benchmarks" / "repeated_sr.py"))
    attrs = [all_attributes("train")[i] for i in (0, 5)]
    gt = ((mod["render"](attrs, 4, 64, 1, 7) + 1) / 2).clamp(0, 1)
    edges, grain = mod["edges_and_grain"](gt, gt)
    assert edges == pytest.approx(1.0) and grain == 0.0
    noisy = (gt + 0.01 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert mod["edges_and_grain"](noisy, gt)[1] > 2.0  # σ 2.55 levels of noise: a mean gradient of about 3 levels
    frames = gt.transpose(1, 2).flatten(0, 1)
    blurred = F.avg_pool2d(frames, 3, 1, 1, count_include_pad=False).unflatten(0, (2, 4)).transpose(1, 2)
    b_edges, b_grain = mod["edges_and_grain"](blurred, gt)
    assert 0.9 < b_edges < 1.0 and b_grain < 0.5
    # bicubic after a 2x downscale rings at the edges
    up = F.interpolate(F.avg_pool2d(frames, 2), scale_factor=2, mode="bicubic").clamp(0, 1)
    assert mod["edges_and_grain"](up.unflatten(0, (2, 4)).transpose(1, 2), gt)[0] > 1.1


def test_the_fast_path_runs_the_three_students_each_on_its_own_grid_and_sampler(demo_dir):
    from cascade.demo import DEMO_DIR
    from cascade.run import load_demo_cascade

    c = load_demo_cascade(demo_dir, fast=True)
    assert all(s.config.is_distilled for s in (c.base, c.tsr, c.ssr))
    assert FAST_FILES == {"base": "base_distilled", "tsr": "tsr_distilled", "ssr": "ssr_distilled"}
    assert FAST_OPTIONS == STUDENT_OPTIONS
    # the shipped SSR student: one step from pure noise (its 2-step teacher's refine grid collapses to it), projected
    # onto its input; it also samples the step counts of the students it retired (2 and 4)
    shipped = load_stage(DEMO_DIR / DEMO_FILES["ssr_distilled"], role="ssr")
    d = shipped.config.distillation
    assert (d.steps, d.refine_from, d.consistency) == ((1, 2, 4), 1.0, True)
    ssr = c.options["ssr"]
    assert (ssr.steps, ssr.refine_from, ssr.consistency) == (1, 1.0, True)
    assert torch.allclose(ssr.grid(shipped), shipped.config.schedule.sigmas(1))
    # the base and TSR students keep their uniform grids and the distilled sampler
    assert all(
        STUDENT_OPTIONS[r].refine_from == 1.0 and STUDENT_OPTIONS[r].sampler.name == "distilled_stochastic"
        for r in ("base", "tsr")
    )
    frames, fps = c("a red circle moving right quickly", seed=3)
    assert frames.shape[0] == 2 * c.base.config.frames and frames.shape[1] == 2 * c.base.config.height


def test_student_indices_group_the_teachers_steps():
    assert student_indices(8, 4) == [0, 2, 4, 6, 8]
    assert student_indices(16, 2) == [0, 8, 16]
    # keep_jump: the refine grid's first step stays one step; the refining steps are grouped
    assert student_indices(8, 2, keep_jump=True) == [0, 1, 8]
    assert student_indices(16, 4, keep_jump=True) == [0, 1, 6, 11, 16]
    assert student_indices(8, 1, keep_jump=True) == [0, 8]
    with pytest.raises(ValueError, match="whole number"):
        student_indices(8, 4, keep_jump=True)
    with pytest.raises(ValueError, match="whole number"):  # checked for every round before any work
        DistillConfig(teacher="x", teacher_steps=8, target_steps=2, refine_from=0.2, keep_jump=True)
    with pytest.raises(ValueError, match="refine_from below 1"):
        DistillConfig(teacher="x", teacher_steps=8, target_steps=2, step_ratio=4, keep_jump=True)


def test_an_on_trajectory_keep_jump_round_learns_the_refining_steps_from_the_teachers_own_states(tmp_path, monkeypatch):
    """--keep-jump --on-trajectory, 8 -> 2 steps on the refine grid 0.2: the student's first step is the
    teacher's first (1 -> 0.2), its second the teacher's other seven, started from the state the teacher's
    sampler reaches from pure noise (one DDIM step of the projected teacher), not from the clip noised."""
    import cascade.distill as distill_module
    from cascade.schedule import grid_times

    paths_seen, trajectory = [], []

    def recording_target(teacher, x, s, *path, **cond):
        paths_seen.append((torch.stack([s, *path], 1), len(trajectory)))
        return distillation_target(teacher, x, s, *path, **cond)

    def recording_step(x, x0, s, s_next):
        trajectory.append((s.clone(), s_next.clone()))
        return ddim_step(x, x0, s, s_next)

    monkeypatch.setattr(distill_module, "distillation_target", recording_target)
    monkeypatch.setattr(distill_module, "ddim_step", recording_step)
    cfg = small_distillation(
        tmp_path, "ssr", refine_from=0.2, step_ratio=4, keep_jump=True, on_trajectory=True, consistency=True,
        steps_per_round=8, batch=2,
    )  # fmt: skip
    paths = distill(cfg)
    sched = load_stage(paths[0], role="ssr").config.schedule
    teacher8 = torch.cat([sched.vesigma(grid_times(8, refine_from=0.2)).float(), torch.zeros(1)])
    firsts = seconds = 0
    steps_before = 0
    for rows, n_traj in paths_seen:
        walked, steps_before = n_traj - steps_before, n_traj
        for row in rows:
            if len(row) == 2:  # the first step: the teacher's own, from pure noise
                assert torch.allclose(row, teacher8[:2], rtol=1e-4) and walked == 0
                firsts += 1
            else:  # the refining step: 0.2 -> 0 in the teacher's seven, after one step of its sampler
                assert torch.allclose(row, teacher8[1:], rtol=1e-4) and walked == 1, (row, walked)
                seconds += 1
    assert firsts and seconds
    assert all(torch.allclose(s, teacher8[0].expand_as(s)) and torch.allclose(n, teacher8[1].expand_as(n)) for s, n in trajectory)
    student = load_stage(paths[1], role="ssr").config.distillation
    assert (student.steps, student.refine_from, student.sampler) == ((2,), pytest.approx(0.2), "ddim")
    assert torch.allclose(SamplingOptions(steps=2).grid(load_stage(paths[1], role="ssr")), teacher8[[0, 1, 8]], rtol=1e-5)


def test_data_weight_adds_the_clip_itself_as_a_second_target(tmp_path, monkeypatch):
    """--data-weight λ: each round's loss is the distillation term plus λ times the same weighted x0 MSE
    of the same prediction against the training clip (the guidance stage stays pure distillation)."""
    import cascade.distill as distill_module

    calls, clips = [], []
    real_mse, real_batch = distill_module._weighted_x_mse, distill_module._Distiller.batch

    def recording_mse(pred, target, s):
        calls.append((pred.detach().clone(), target.detach().clone()))
        return real_mse(pred, target, s)

    def recording_batch(self, step, salt):
        out = real_batch(self, step, salt)
        clips.append((salt, out[0].clone()))
        return out

    monkeypatch.setattr(distill_module, "_weighted_x_mse", recording_mse)
    monkeypatch.setattr(distill_module._Distiller, "batch", recording_batch)
    distill(small_distillation(tmp_path, "tsr", data_weight=0.5, target_steps=4, steps_per_round=3, consistency=True))
    guided = [x for salt, x in clips if salt == 1]
    rounds = [x for salt, x in clips if salt != 1]
    assert len(guided) == 2 and len(rounds) == 3
    assert len(calls) == len(guided) + 2 * len(rounds)  # one term per guidance step, two per round step
    for k, x in enumerate(rounds):
        (pred, target), (pred2, data) = calls[2 + 2 * k], calls[3 + 2 * k]
        assert torch.equal(pred, pred2) and torch.equal(data, x) and not torch.equal(target, x)
    with pytest.raises(ValueError, match="data_weight must be a finite number >= 0"):
        DistillConfig(teacher="x", data_weight=-1.0)
