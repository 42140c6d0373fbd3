import pytest
import torch
from helpers import tiny_stage

from cascade.guidance import GuidanceOptions
from cascade.pipeline import SamplingOptions, frame_noise, generate, upsample_spatial, upsample_temporal
from cascade.stage import Stage
from cascade.text import TextEmbedding


def txt(b=1, width=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TextEmbedding(
        torch.randn(b, 3, width, generator=g),
        torch.ones(b, 3, dtype=torch.bool),
        torch.randn(b, width, generator=g),
        "test-encoder",
    )


FAST = SamplingOptions(steps=3, guidance=2.0, seed=7)


def test_generate_is_deterministic_in_the_seed():
    stage = tiny_stage("base")
    a = generate(stage, txt(), options=FAST)
    b = generate(stage, txt(), options=FAST)
    c = generate(stage, txt(), options=SamplingOptions(steps=3, guidance=2.0, seed=8))
    assert a.shape == (1, 3, 4, 8, 8) and a.abs().max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral", "distilled_stochastic"])
def test_all_samplers_and_guidance_modes(sampler):
    """Oscillating guidance reaches every sampler: w_high for the first const_steps steps, then
    alternating w_low / w_high; with w_low = 0 the unconditional branch runs only on w_high steps."""
    stage = tiny_stage("base")
    batches = []
    stage.net.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    guide = GuidanceOptions(5.0, oscillate=True, w_low=0.0, const_steps=1, thresholding="static")
    out = generate(stage, txt(), frames=6, height=16, width=8, options=SamplingOptions(steps=4, sampler=sampler, guidance=guide))
    assert out.shape == (1, 3, 6, 16, 8) and torch.isfinite(out).all()
    assert batches == [2, 1, 2, 1]  # cond+uncond, cond only (w_low = 0), cond+uncond, cond only
    constant = generate(
        stage, txt(), frames=6, height=16, width=8, options=SamplingOptions(steps=4, sampler=sampler, guidance=5.0)
    )
    assert not torch.allclose(out, constant)


def test_progress_counts_every_evaluation_and_can_cancel():
    stage = tiny_stage("base")
    seen = []
    generate(stage, txt(), options=FAST, progress=lambda d, t, p: seen.append((d, t, p is not None)))
    assert [s for s in seen if not s[2]] == [(1, 3, False), (2, 3, False), (3, 3, False)]
    assert sum(s[2] for s in seen) == 3  # one preview per step

    class Cancelled(Exception):
        pass

    def cancel(done, total, preview):
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        generate(stage, txt(), options=SamplingOptions(steps=10), progress=cancel)


def test_bad_inputs_are_clear():
    base = tiny_stage("base")
    with pytest.raises(ValueError, match="Impossible size"):
        generate(base, txt(), height=7, options=FAST)
    with pytest.raises(ValueError, match="w must be >= 0"):
        SamplingOptions(guidance=-1)
    with pytest.raises(ValueError, match="positive integer"):
        SamplingOptions(steps=0)
    with pytest.raises(ValueError, match="trained with test-encoder text encoder of width 8"):
        generate(base, txt(width=16), options=FAST)
    with pytest.raises(ValueError, match="needs a spatial super-resolution"):
        upsample_spatial(base, torch.zeros(1, 3, 2, 8, 8), txt(), options=FAST)
    ssr = tiny_stage("ssr")
    bad = torch.zeros(1, 3, 2, 8, 8)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        upsample_spatial(ssr, bad, txt(), options=FAST)
    with pytest.raises(ValueError, match="no continuation channels"):
        generate(base, txt(), options=FAST, known=torch.zeros(1, 3, 4, 8, 8), known_mask=torch.ones(1, 4))


def test_ssr_any_size_windows_and_tiles_match_shapes():
    ssr = tiny_stage("ssr")
    low = torch.rand(1, 3, 7, 6, 10) * 2 - 1
    out = upsample_spatial(ssr, low, txt(), options=FAST, window=4, overlap=2)
    assert out.shape == (1, 3, 7, 12, 20)
    tiled = upsample_spatial(ssr, low, txt(), options=FAST, window=4, overlap=2, tile=8, tile_overlap=4)
    assert tiled.shape == out.shape and torch.isfinite(tiled).all()
    assert upsample_spatial(ssr, low, txt(), size=(9, 5), options=FAST).shape == (1, 3, 7, 9, 5)


def test_ssr_windows_equal_one_pass_when_the_model_is_frame_local():
    # with temporal convs at their zero initialisation the SSR is per-frame, so window fusion is exact
    ssr = tiny_stage("ssr")
    for m in ssr.net.modules():
        if type(m).__name__ == "TemporalConv":
            torch.nn.init.zeros_(m.conv.weight)
            torch.nn.init.zeros_(m.conv.bias)
    low = torch.rand(1, 3, 9, 4, 4) * 2 - 1
    full = upsample_spatial(ssr, low, txt(), options=FAST, window=0)
    windowed = upsample_spatial(ssr, low, txt(), options=FAST, window=4, overlap=2)
    assert torch.allclose(full, windowed, atol=1e-5)


@pytest.mark.parametrize("mode,mult,n_out", [("imagen", 2, 10), ("interpolate", 2, 9), ("imagen", 4, 20), ("interpolate", 4, 17)])
def test_tsr_frame_counts(mode, mult, n_out):
    tsr = tiny_stage("tsr")
    out = upsample_temporal(
        tsr, torch.rand(1, 3, 5, 8, 8) * 2 - 1, txt(), multiplier=mult, mode=mode, options=FAST, window=8, overlap=2
    )
    assert out.shape == (1, 3, n_out, 8, 8)
    with pytest.raises(ValueError, match="power of 2"):
        upsample_temporal(tsr, torch.rand(1, 3, 5, 8, 8), txt(), multiplier=3, options=FAST)


def test_distilled_student_checks():
    student = tiny_stage("base", distilled=True)
    out = generate(student, txt(), options=SamplingOptions(steps=4, sampler="distilled_stochastic", guidance=3.0))
    assert out.shape == (1, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="distilled for 4/2 steps; received 8"):
        generate(student, txt(), options=SamplingOptions(steps=8, guidance=3.0))
    with pytest.raises(ValueError, match=r"w in \[0, 5\]"):
        generate(student, txt(), options=SamplingOptions(steps=4, guidance=9.0))


def test_continuation_base_takes_known_frames():
    stage = tiny_stage("base", continuation=True)
    known = torch.rand(1, 3, 4, 8, 8) * 2 - 1
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    a = generate(stage, txt(), options=FAST, known=known, known_mask=mask)
    b = generate(stage, txt(), options=FAST)
    assert a.shape == b.shape and not torch.equal(a, b)


def test_frame_noise_depends_only_on_absolute_frame():
    full = frame_noise(5, 0, (1, 3, 10, 4, 4))
    part = frame_noise(5, 0, (1, 3, 4, 4, 4), frame_offset=3)
    assert torch.equal(full[:, :, 3:7], part)
    assert not torch.equal(frame_noise(6, 0, (1, 3, 4, 4, 4), 3), part)


def test_a_shifted_base_samples_its_own_grid_and_round_trips_through_a_file(tmp_path):
    from cascade.pipeline import _aug_logsnr
    from cascade.schedule import CosineSchedule
    from cascade.stage import load_stage

    stage = tiny_stage("base", continuation=True, schedule=CosineSchedule(logsnr_shift=-5.0))
    assert torch.isfinite(generate(stage, txt(), options=FAST)).all()
    stage.save(tmp_path / "s.safetensors")
    loaded = load_stage(tmp_path / "s.safetensors")
    assert loaded.config.schedule == stage.config.schedule
    den, sigmas = loaded.denoiser(), []

    def spy(x, sigma, **kw):
        sigmas.append(float(sigma[0]))
        return den(x, sigma, **kw)

    from cascade.samplers import sample_ddim

    grid = loaded.config.schedule.sigmas(3)
    sample_ddim(spy, torch.randn(1, 3, 4, 8, 8) * grid[0], grid, extra_args={"text": txt(), **_cont(loaded)})
    assert sigmas == pytest.approx(grid[:-1].tolist())
    # the continuation noise-augmentation level does not move with the diffusion schedule
    lam = _aug_logsnr(loaded, SamplingOptions(aug_level=0.3), 1)
    assert lam.item() == pytest.approx(CosineSchedule().logsnr(0.3).item())


def _cont(stage):
    from cascade.conditioning import known_frames_condition

    return {"cond": known_frames_condition(torch.zeros(1, 3, 4, 8, 8), torch.zeros(1, 4)), "aug_logsnr": torch.zeros(1)}


def test_denoise_below_one_starts_sr_from_the_noised_input(monkeypatch):
    from cascade.conditioning import resize_video, tsr_condition

    ssr = tiny_stage("ssr")
    low = torch.rand(1, 3, 3, 4, 4) * 2 - 1
    target = resize_video(low, (8, 8))
    seen = []

    def oracle(x, sigma, **kw):  # a denoiser that knows the answer: the upsampled input itself
        seen.append((float(sigma[0]), (x - target).std().item()))
        return target

    monkeypatch.setattr(type(ssr), "denoiser", lambda self: oracle)
    opts = SamplingOptions(steps=4, guidance=GuidanceOptions(0.0, thresholding="none"), denoise=0.4)
    out = upsample_spatial(ssr, low, txt(), options=opts)
    assert torch.allclose(out, target, atol=1e-6)
    s0 = ssr.config.schedule.vesigma(0.4).item()
    assert seen[0][0] == pytest.approx(s0, rel=1e-5) and len(seen) == 4
    assert seen[0][1] == pytest.approx(s0, rel=0.3)  # the start is the input plus noise of that sigma, not pure noise

    tsr = tiny_stage("tsr")
    video = torch.rand(1, 3, 3, 8, 8) * 2 - 1
    first = []
    monkeypatch.setattr(type(tsr), "denoiser", lambda self: lambda x, sigma, **kw: first.append(x.clone()) or x * 0)
    upsample_temporal(
        tsr, video, txt(), options=SamplingOptions(steps=2, guidance=GuidanceOptions(0.0, thresholding="none"), denoise=0.05)
    )
    rep = tsr_condition(video, 2)[:, :3]
    assert (first[0] - rep).abs().mean() < 0.1 < (first[0] - rep.roll(1, dims=2)).abs().mean()  # starts at the repeated frames


def test_denoise_is_refused_where_it_has_no_meaning():
    with pytest.raises(ValueError, match="denoise must be in"):
        SamplingOptions(denoise=0.0)
    with pytest.raises(ValueError, match="option of SR stages"):
        generate(tiny_stage("base"), txt(), options=SamplingOptions(steps=2, denoise=0.5))
    student = tiny_stage("ssr", distilled=True)
    with pytest.raises(ValueError, match="use denoise = 1"):
        upsample_spatial(student, torch.zeros(1, 3, 2, 4, 4), txt(), options=SamplingOptions(steps=4, guidance=1.0, denoise=0.5))


def test_consistency_projects_sr_outputs_onto_their_input():
    from dataclasses import replace

    from cascade.conditioning import resize_video

    g = torch.Generator().manual_seed(3)
    proj = replace(FAST, consistency=True)
    tsr = tiny_stage("tsr")
    low = torch.rand(1, 3, 5, 8, 8, generator=g) * 1.6 - 0.8
    for mode in ("imagen", "interpolate"):
        out = upsample_temporal(tsr, low, txt(), mode=mode, options=proj, window=6, overlap=2)
        raw = upsample_temporal(tsr, low, txt(), mode=mode, options=FAST, window=6, overlap=2)
        assert torch.allclose(out[:, :, ::2][:, :, :5], low, atol=1e-5)  # the input frames, exactly
        assert not torch.allclose(raw[:, :, ::2][:, :, :5], low, atol=0.05)  # the untrained net redraws them
    ssr = tiny_stage("ssr")
    low = resize_video(torch.rand(1, 3, 3, 3, 4, generator=g) * 1.6 - 0.8, (5, 7))  # odd sizes: padded inside
    err = lambda v: (resize_video(v, (5, 7)) - low).abs().mean().item()  # noqa: E731
    out = upsample_spatial(ssr, low, txt(), options=proj)
    raw = upsample_spatial(ssr, low, txt(), options=FAST)
    assert out.shape == raw.shape == (1, 3, 3, 10, 14)
    assert err(out) < 0.3 * err(raw)
    with pytest.raises(ValueError, match="SR stages"):
        generate(tiny_stage("base"), txt(), options=proj)
    with pytest.raises(ValueError, match="True or False"):
        SamplingOptions(consistency=1)


def test_motion_search_reaches_the_tsr_projection_and_only_the_tsr():
    """``motion_search`` in the options: a TSR stage (windowed too) copies a block moving 4 px per input
    frame into its inserted frames; the SSR and the base refuse it, and out of range it is refused."""
    from dataclasses import replace

    def frame(x):
        f = torch.full((3, 16, 16), -0.8)
        f[:, 5:11, x : x + 4] = 0.9
        return f

    low = torch.stack([frame(1 + 4 * i) for i in range(3)], dim=1)[None]
    truth = torch.stack([frame(1 + 2 * i) for i in range(5)], dim=1)[None]
    tsr, proj = tiny_stage("tsr"), replace(FAST, consistency=True)
    err = lambda o: (o[:, :, 1::2] - truth[:, :, 1::2]).abs().mean().item()  # noqa: E731
    for window in (None, 4):
        kw = {"window": window, "overlap": 2} if window else {}
        still = upsample_temporal(tsr, low, txt(), mode="interpolate", options=proj, **kw)
        moved = upsample_temporal(tsr, low, txt(), mode="interpolate", options=replace(proj, motion_search=4), **kw)
        assert err(moved) < 0.2 * err(still)
    with pytest.raises(ValueError, match="motion_search"):
        upsample_spatial(tiny_stage("ssr"), torch.zeros(1, 3, 2, 4, 4), txt(), options=replace(proj, motion_search=2))
    with pytest.raises(ValueError, match="motion_search"):
        SamplingOptions(motion_search=9)


def test_a_student_distilled_with_the_projection_warns_when_sampled_without_it(caplog):
    from dataclasses import replace

    from cascade.config import DistillationInfo
    from cascade.pipeline import _warn_projection_off

    _warn_projection_off.cache_clear()  # once per student and process
    student = tiny_stage("tsr", distilled=True)
    info = DistillationInfo(steps=(2,), w_max=5.0, consistency=True)
    student = Stage(student.config.replace(distillation=info), student.net)
    opts = SamplingOptions(steps=2, guidance=0.0)
    low = torch.zeros(1, 3, 3, 8, 8)
    with caplog.at_level("WARNING", logger="cascade.pipeline"):
        upsample_temporal(student, low, txt(), options=replace(opts, consistency=True))
    assert "distilled with the projection" not in caplog.text
    with caplog.at_level("WARNING", logger="cascade.pipeline"):
        upsample_temporal(student, low, txt(), options=opts)
        upsample_temporal(student, low, txt(), options=opts)  # a story's next chunk: no second warning
    assert "distilled with the projection" in caplog.text and "Turn consistency on" in caplog.text
    assert caplog.text.count("distilled with the projection") == 1


def test_cli_sr_consistency_switch_sets_both_sr_stages_and_nothing_else():
    import argparse
    from types import SimpleNamespace

    from cascade.cli import _sr_consistency
    from cascade.run import DEFAULT_OPTIONS

    for flag, expected in (("off", False), ("on", True), (None, DEFAULT_OPTIONS["tsr"].consistency)):
        cascade = SimpleNamespace(options=dict(DEFAULT_OPTIONS))
        _sr_consistency(cascade, argparse.Namespace(sr_consistency=flag))
        assert cascade.options["tsr"].consistency is expected and cascade.options["ssr"].consistency is expected
        assert cascade.options["base"] == DEFAULT_OPTIONS["base"]
    assert DEFAULT_OPTIONS["tsr"].consistency and DEFAULT_OPTIONS["ssr"].consistency  # the demo's default


def test_refine_from_samples_its_grid_and_is_refused_where_it_has_no_meaning():
    ssr = tiny_stage("ssr")
    low = torch.rand(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(5)) * 1.6 - 0.8
    opts = SamplingOptions(steps=3, guidance=GuidanceOptions(0.0), seed=2, refine_from=0.25)
    grid = ssr.config.schedule.sigmas(3, refine_from=0.25)
    explicit = SamplingOptions(steps=3, guidance=GuidanceOptions(0.0), seed=2, sigmas=tuple(grid.tolist()))
    assert torch.equal(opts.grid(ssr), grid)
    refined = upsample_spatial(ssr, low, txt(), options=opts)
    assert torch.allclose(refined, upsample_spatial(ssr, low, txt(), options=explicit), atol=1e-6)
    uniform = upsample_spatial(ssr, low, txt(), options=SamplingOptions(steps=3, guidance=GuidanceOptions(0.0), seed=2))
    assert not torch.allclose(refined, uniform, atol=1e-3)
    with pytest.raises(ValueError, match="refine_from must be a time in"):
        SamplingOptions(refine_from=0.0)
    with pytest.raises(ValueError, match="leave it at 1 here"):
        SamplingOptions(steps=3, sigmas=tuple(grid.tolist()), refine_from=0.2)
    with pytest.raises(ValueError, match="below denoise"):
        SamplingOptions(denoise=0.2, refine_from=0.3)
    student = tiny_stage("ssr", distilled=True)
    with pytest.raises(ValueError, match="use refine_from = 1"):
        upsample_spatial(student, low, txt(), options=SamplingOptions(steps=4, guidance=1.0, refine_from=0.2))
