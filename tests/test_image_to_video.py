"""Image-to-video, video extension and first/last-frame control on the base sampler node (known
frames through the base's known-frame channels), with the shipped demo base."""

import pytest
import torch
from packimport import load_pack
from test_distill_eval import minilm_stage

pack = load_pack()
M = pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def demo():
    model = M["ImagenVideoModelLoader"]().load("demo_base_16f_32px.safetensors")[0]
    enc = M["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]
    cond = M["ImagenVideoTextEncode"]().encode(enc, "a green square moving right slowly")[0]
    return model, cond


def run(model, cond, **kw):
    args = dict(frames=16, width=32, height=32, fps=4.0, seed=3, steps=8, guidance=4.0, sampler_name="ddim")
    args.update(kw)
    return M["ImagenVideoSampler"]().sample(model, cond, **args)["result"][0]


def picture(colour=(1.0, 0.2, 0.2), size=96):
    """A square of ``colour`` left of centre on a dark background, at another size than the model's."""
    img = torch.full((1, size, size, 3), 0.15)
    img[:, size // 3 : 2 * size // 3, size // 6 : size // 2] = torch.tensor(colour)
    return img


def test_start_and_end_images_become_the_first_and_last_frames(demo):
    model, cond = demo
    start, end = picture(), picture((0.2, 0.4, 1.0))
    free = run(model, cond)
    given = run(model, cond, start_images=start, end_images=end, known_noise=0.0)
    fitted = torch.nn.functional.interpolate(start.permute(0, 3, 1, 2), size=(32, 32), mode="bilinear", antialias=True)[0]
    fitted_end = torch.nn.functional.interpolate(end.permute(0, 3, 1, 2), size=(32, 32), mode="bilinear", antialias=True)[0]
    err = lambda a, b: float((a.permute(2, 0, 1) - b).pow(2).mean())  # noqa: E731
    assert err(given[0], fitted) < 1e-4 < err(free[0], fitted)  # the clip starts from the picture
    assert err(given[-1], fitted_end) < 1e-4 < err(free[-1], fitted_end)  # and ends on the other one
    assert given.shape == free.shape == (16, 32, 32, 3)
    for w in (8.0, 20.0):  # exact also under strong guidance (dynamic thresholding rescales the rest, not them)
        strong = run(model, cond, start_images=start, known_noise=0.0, guidance=w)
        assert err(strong[0], fitted) < 1e-4


def test_extend_a_video_with_its_last_frames(demo):
    model, cond = demo
    first = run(model, cond)
    more = run(model, cond, start_images=first[-4:], seed=4)
    assert float((more[:4] - first[-4:]).pow(2).mean()) < 1e-4  # the continuation starts where the video ended
    jump = float((more[4] - more[3]).pow(2).mean())
    cut = float((run(model, cond, seed=4)[0] - first[-1]).pow(2).mean())  # a new clip instead of a continuation
    assert jump < cut, (jump, cut)


def test_without_images_the_video_is_unchanged(demo):
    """Adding the inputs changed nothing for saved workflows: same seed, same frames as the library."""
    from imagen_video_pack.cascade.guidance import GuidanceOptions
    from imagen_video_pack.cascade.pipeline import SamplingOptions, generate
    from imagen_video_pack.nodes.convert import conditioning_to_text

    model, cond = demo
    node = run(model, cond)
    opts = SamplingOptions(steps=8, sampler="ddim", guidance=GuidanceOptions(4.0), seed=3)
    lib = generate(model.stage, conditioning_to_text(cond), frames=16, height=32, width=32, options=opts)
    assert torch.equal(node, ((lib[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1))


def test_known_frame_errors(demo, tmp_path):
    model, cond = demo
    with pytest.raises(ValueError, match="leave nothing to generate"):
        run(model, cond, start_images=torch.rand(10, 8, 8, 3), end_images=torch.rand(6, 8, 8, 3))
    with pytest.raises(ValueError, match="start_images input contains NaN"):
        run(model, cond, start_images=torch.full((1, 8, 8, 3), float("nan")))
    adapter = pack.nodes.adapter
    (tmp_path / "imagen_video").mkdir()
    from helpers import tiny_unet

    from cascade.config import StageConfig
    from cascade.stage import Stage

    plain_cfg = StageConfig(
        role="base",
        unet=tiny_unet(text_dim=384),
        frames=4,
        height=8,
        width=8,
        text_dim=384,
        text_encoder=minilm_stage("tsr").config.text_encoder,
    )
    Stage(plain_cfg).save(tmp_path / "imagen_video" / "plain.safetensors")
    old, adapter.PACK_MODELS = adapter.PACK_MODELS, tmp_path
    try:
        plain = M["ImagenVideoModelLoader"]().load("plain.safetensors")[0]
    finally:
        adapter.PACK_MODELS = old
    with pytest.raises(ValueError, match="no known-frame channels"):
        run(plain, cond, frames=4, width=8, height=8, start_images=torch.rand(1, 8, 8, 3))
