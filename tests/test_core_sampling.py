"""Core custom sampling on our stages (a SAMPLER and SIGMAS on every stage node), our samplers as
SAMPLER objects, and the truncated-cosine schedule as SIGMAS, with the shipped demo stages.

Outside ComfyUI the SAMPLER objects are the adapter's KSAMPLER stand-in; the integration test
(test_comfyui_integration.py) runs ComfyUI's own euler, euler_ancestral, dpmpp_2m and uni_pc."""

import math

import pytest
import torch
from packimport import load_pack

pack = load_pack()
M = pack.NODE_CLASS_MAPPINGS
core = pack.nodes.core_sampling
vesigma_to_alpha_sigma = pack.cascade.schedule.vesigma_to_alpha_sigma


@pytest.fixture(scope="module")
def demo():
    load = M["ImagenVideoModelLoader"]().load
    models = {
        r: load(f)[0]
        for r, f in [
            ("base", "demo_base_16f_32px.safetensors"),
            ("ssr", "demo_ssr_x2_64px.safetensors"),
            ("tsr", "demo_tsr_x2_32px.safetensors"),
            ("student", "demo_base_16f_32px_distilled_2step.safetensors"),
        ]
    }
    enc = M["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]
    cond = M["ImagenVideoTextEncode"]().encode(enc, "a red circle moving right slowly")[0]
    return models, cond


def base(models, cond, **kw):
    args = dict(frames=8, width=32, height=32, fps=4.0, seed=5, steps=6, guidance=4.0, sampler_name="ddim")
    args.update(kw)
    return M["ImagenVideoSampler"]().sample(models["base"], cond, **args, show_animation=False)["result"][0]


def ssr(models, cond, images, **kw):
    args = dict(scale=2.0, noise_augmentation=0.3, seed=2, steps=4, guidance=0.0)
    args.update(kw)
    return M["ImagenVideoSpatialSR"]().upscale(models["ssr"], images, cond, **args, show_animation=False)["result"][0]


def tsr(models, cond, images, **kw):
    args = dict(fps=4.0, multiplier=2, frame_count_mode="imagen", noise_augmentation=0.3, seed=2, steps=4, guidance=0.0)
    args.update(kw)
    return M["ImagenVideoTemporalSR"]().interpolate(models["tsr"], images, positive=cond, **args, show_animation=False)["result"][
        0
    ]


# textbook k-diffusion samplers (Karras et al. Alg. 2 without churn; Euler ancestral with eta = 1),
# written here so the standalone test exercises the KSAMPLER protocol the way ComfyUI's do
def textbook_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        den = model(x, sigmas[i] * s_in, **(extra_args or {}))
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": den})
        x = x + (x - den) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def textbook_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        den = model(x, s * s_in, **(extra_args or {}))
        up = (s_next**2 * (s**2 - s_next**2) / s**2).sqrt()
        down = (s_next**2 - up**2).sqrt()
        x = x + (x - den) / s * (down - s)
        if s_next > 0:
            x = x + noise_sampler(s, s_next) * up
    return x


def psnr(a, b):
    return 10 * math.log10(1.0 / max(float((a - b).pow(2).mean()), 1e-12))


def test_a_core_euler_sampler_is_ddim_on_every_stage(demo):
    """Euler on the probability-flow ODE in k-diffusion units is DDIM: a core Euler SAMPLER drives
    the base, SSR and TSR stages and gives our DDIM's video."""
    models, cond = demo
    euler = core.make_ksampler(textbook_euler)
    ours = base(models, cond)
    theirs = base(models, cond, sampler=euler)
    assert (theirs - ours).abs().max() < 2e-3, float((theirs - ours).abs().max())
    low = ours[:4, ::2, ::2]
    assert (ssr(models, cond, low, sampler=euler) - ssr(models, cond, low)).abs().max() < 2e-3
    assert (tsr(models, cond, ours[:4], sampler=euler) - tsr(models, cond, ours[:4])).abs().max() < 2e-3


def test_a_core_euler_ancestral_sampler_is_our_ancestral_sampler_at_gamma_0(demo):
    """Euler ancestral (eta 1) is the posterior (DDPM) step: with the run's seeded step noise
    injected it reproduces our ancestral sampler at gamma 0, and a seed gives one video."""
    models, cond = demo
    ea = core.make_ksampler(textbook_euler_ancestral)
    ours = M["ImagenVideoSampler"]().sample(
        models["base"],
        cond,
        8,
        32,
        32,
        4.0,
        5,
        6,
        4.0,
        "ancestral",
        sampler=pack.nodes.sampling.ImagenVideoSamplerSelect().select("ancestral", 0.0)[0],
        show_animation=False,
    )["result"][0]
    theirs = base(models, cond, sampler=ea)
    assert (theirs - ours).abs().max() < 2e-3
    assert torch.equal(theirs, base(models, cond, sampler=ea))
    assert not torch.equal(theirs, base(models, cond, sampler=ea, seed=6))


def test_our_sampler_select_runs_natively_on_our_stages(demo):
    models, cond = demo
    for name in ("ddim", "ancestral", "distilled_stochastic"):
        sampler = M["ImagenVideoSamplerSelect"]().select(name, 0.3)[0]
        assert sampler.imagen_video_sampler.name == name
        assert torch.equal(base(models, cond, sampler=sampler), base(models, cond, sampler_name=name))


def test_stage_scheduler_sigmas_give_the_same_video_as_steps_and_denoise(demo):
    models, cond = demo
    sched = M["ImagenVideoScheduler"]()
    sig = sched.schedule(models["base"], 6, 1.0)[0]
    assert sig.shape == (7,) and float(sig[-1]) == 0.0 and math.isclose(float(sig[0]), math.exp(10), rel_tol=1e-4)
    assert torch.equal(base(models, cond, sigmas=sig, steps=32), base(models, cond))  # steps come from the grid
    low = base(models, cond)[:4, ::2, ::2]
    half = sched.schedule(models["ssr"], 4, 0.5)[0]
    assert torch.equal(ssr(models, cond, low, sigmas=half), ssr(models, cond, low, denoise=0.5))
    assert torch.equal(
        tsr(models, cond, low, sigmas=sched.schedule(models["tsr"], 4, 0.5)[0]), tsr(models, cond, low, denoise=0.5)
    )


def test_the_sr_nodes_refine_grid_is_the_schedulers_and_belongs_to_it_when_sigmas_are_connected(demo):
    models, cond = demo
    low = base(models, cond)[:4, ::2, ::2]
    sched = M["ImagenVideoScheduler"]()
    grid = sched.schedule(models["ssr"], 4, 1.0, 0.2)[0]
    assert torch.allclose(grid, models["ssr"].stage.config.schedule.sigmas(4, refine_from=0.2))
    refined = ssr(models, cond, low, refine_from=0.2)
    assert torch.equal(ssr(models, cond, low, sigmas=grid), refined)
    assert not torch.equal(ssr(models, cond, low), refined)  # the widget's default keeps the uniform grid
    with pytest.raises(ValueError, match="set it in the node that makes the sigmas"):
        ssr(models, cond, low, sigmas=grid, refine_from=0.2)
    cosine = M["ImagenVideoCosineScheduler"]().schedule(4, -20.0, 20.0, 0.0, 1.0, 0.2)[0]
    assert torch.allclose(cosine, grid)


def test_a_partial_grid_keeps_the_input(demo):
    """Any core grid that starts below the schedule's top starts an SR stage from its input video:
    the less noise, the closer the output stays to bicubic."""
    models, cond = demo
    low = base(models, cond)[:4, ::2, ::2]
    bicubic = torch.nn.functional.interpolate(low.permute(0, 3, 1, 2), scale_factor=2, mode="bicubic", antialias=False)
    bicubic = bicubic.permute(0, 2, 3, 1).clamp(0, 1)
    karras = lambda top: torch.tensor([top, top * 0.3, top * 0.05, 0.0])  # noqa: E731
    near = psnr(ssr(models, cond, low, sigmas=karras(0.05)), bicubic)
    far = psnr(ssr(models, cond, low, sigmas=karras(5.0)), bicubic)
    assert near > far and near > 30, (near, far)


def test_cosine_scheduler_node():
    node = M["ImagenVideoCosineScheduler"]()
    sig = node.schedule(10, -20.0, 20.0, 0.0, 1.0)[0]
    lam = -2 * torch.log(sig[:-1].double())
    assert math.isclose(float(lam[0]), -20.0, abs_tol=1e-3) and float(sig[-1]) == 0.0 and len(sig) == 11
    assert bool((sig[1:] < sig[:-1]).all())
    shifted = node.schedule(10, -20.0, 20.0, -5.0, 1.0)[0]
    assert bool((shifted[1:-1] >= sig[1:-1]).all()) and bool((shifted[1:-1] > sig[1:-1]).any())  # more noise
    sd = node.schedule(10, -5.4, 20.0, 0.0, 0.5)[0]
    assert float(sd[0]) < math.exp(2.7)  # half of the grid
    with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
        node.schedule(10, 5.0, -5.0, 0.0, 1.0)


def test_our_samplers_on_a_core_model():
    """Our SAMPLER objects run on any KSAMPLER-style model. On Gaussian data (exact denoiser
    ``mu + c^2 / (c^2 + s^2) (x - mu)``) DDIM follows the exact probability-flow ODE, the stochastic
    samplers draw samples with the data's spread, and the seed in ``extra_args`` fixes their noise."""
    mu, c = 0.2, 0.5
    shape = (1, 3, 4, 16, 16)

    def gaussian(x, sigma, **kw):
        s = sigma.reshape(-1, 1, 1, 1, 1).to(x)
        return mu + c**2 / (c**2 + s**2) * (x - mu)

    wrap = core._StageModelWrap(gaussian, {}, core._ContinuousV(math.exp(-10), math.exp(10)), "test")
    sigmas = pack.cascade.schedule.CosineSchedule().sigmas(256)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    smax = float(sigmas[0])
    exact = mu + c * noise * smax / (c**2 + smax**2) ** 0.5
    for name in ("ddim", "ancestral", "distilled_stochastic"):
        ks = M["ImagenVideoSamplerSelect"]().select(name, 0.5)[0]

        def run(seed, ks=ks):
            return ks.sample(wrap, sigmas, {"seed": seed}, None, noise, torch.zeros(shape))

        out = run(1)
        if name == "ddim":
            assert (out - exact).pow(2).mean().sqrt() < 0.005  # first order: 0.003 at 256 steps
            continue
        assert torch.equal(out, run(1)) and not torch.equal(out, run(2)), name
        assert abs(float(out.mean()) - mu) < 0.05 and abs(float(out.std()) - c) < 0.05, (name, float(out.std()))


def test_bad_core_sampling_inputs(demo):
    models, cond = demo
    sig = M["ImagenVideoScheduler"]().schedule(models["ssr"], 4, 1.0)[0]
    low = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match="denoise belongs to the stage's own schedule"):
        ssr(models, cond, low, sigmas=sig, denoise=0.5)
    with pytest.raises(ValueError, match="non-increasing"):
        base(models, cond, sigmas=torch.tensor([1.0, 5.0, 0.0]))
    with pytest.raises(ValueError, match="at least 2 entries"):
        base(models, cond, sigmas=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="must be a SIGMAS grid"):
        base(models, cond, sigmas=[1.0, 0.0])
    with pytest.raises(ValueError, match="ComfyUI SAMPLER"):
        base(models, cond, sampler="euler")
    with pytest.raises(ValueError, match="distilled on"):
        M["ImagenVideoSampler"]().sample(models["student"], cond, 8, 32, 32, 4.0, 0, 8, 4.0, "ddim", sigmas=sig)

    def cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = dict(extra_args or {})
        extra_args["model_options"] = {"sampler_post_cfg_function": [lambda args: args["denoised"]]}
        return textbook_euler(model, x, sigmas, extra_args)

    with pytest.raises(ValueError, match="needs ComfyUI's CFG internals"):
        base(models, cond, sampler=core.make_ksampler(cfg_pp))
