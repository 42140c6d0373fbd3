import pytest
import torch

from cascade.config import StageConfig, UNetConfig
from cascade.layers import TemporalAttention, TemporalConv, relative_position_buckets
from cascade.text import TextEmbedding
from cascade.unet import VideoUNet

CFG = UNetConfig(
    channels=(16, 32),
    num_res_blocks=1,
    spatial_attn=(False, True),
    cross_attn=(False, True),
    temporal_attn=(True, True),
    text_dim=8,
    head_dim=8,
    norm_groups=4,
)


def randomize(net, temporal_too: bool):
    """Give every weight a random value (as after training), optionally keeping the temporal
    residual outputs at their zero initialisation."""
    g = torch.Generator().manual_seed(0)
    keep = set()
    if not temporal_too:
        for m in net.modules():
            if isinstance(m, TemporalConv):
                keep |= {id(p) for p in m.conv.parameters()}
            if isinstance(m, TemporalAttention):
                keep |= {id(p) for p in m.out.parameters()}
    with torch.no_grad():
        for p in net.parameters():
            if id(p) not in keep:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


def txt(b, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TextEmbedding(torch.randn(b, n, 8, generator=g), torch.ones(b, n, dtype=torch.bool), torch.randn(b, 8, generator=g))


def test_temporal_residuals_are_zero_initialised():
    net = VideoUNet(CFG)
    for m in net.modules():
        if isinstance(m, TemporalConv):
            assert m.conv.weight.abs().sum() == 0 and m.conv.bias.abs().sum() == 0
        if isinstance(m, TemporalAttention):
            assert m.out.weight.abs().sum() == 0 and m.out.bias.abs().sum() == 0


def test_video_model_at_init_equals_per_frame_image_model():
    net = randomize(VideoUNet(CFG), temporal_too=False).eval()
    z = torch.randn(2, 3, 6, 16, 16)
    lam = torch.tensor([1.0, -2.0])
    t = txt(2)
    video = net(z, lam, text=t)
    assert video.abs().mean() > 1e-3  # a non-trivial function
    for f in range(6):
        frame = net(z[:, :, f : f + 1], lam, text=t)
        assert torch.allclose(video[:, :, f : f + 1], frame, atol=1e-5)


def test_packed_image_frames_are_independent_of_their_neighbours():
    net = randomize(VideoUNet(CFG), temporal_too=True).eval()
    z = torch.randn(2, 3, 5, 16, 16)
    per_frame_text = TextEmbedding.concat([txt(5, seed=1), txt(5, seed=2)])  # (B*T) captions
    mask = torch.tensor([0.0, 1.0])  # item 0: packed images, item 1: a video
    out = net(z, torch.zeros(2), text=per_frame_text, video_mask=mask)
    z2 = z.clone()
    z2[:, :, 3] += torch.randn_like(z2[:, :, 3])  # change frame 3 of both items
    out2 = net(z2, torch.zeros(2), text=per_frame_text, video_mask=mask)
    others = [0, 1, 2, 4]
    assert torch.allclose(out[0, :, others], out2[0, :, others], atol=1e-5)  # images: untouched
    assert not torch.allclose(out[1, :, others], out2[1, :, others], atol=1e-3)  # video: frames interact


def test_single_frame_equals_packed_image():
    net = randomize(VideoUNet(CFG), temporal_too=True).eval()
    z = torch.randn(1, 3, 4, 16, 16)
    t = txt(1)
    packed = net(z, torch.zeros(1), text=TextEmbedding.concat([t] * 4), video_mask=torch.zeros(1))
    single = torch.cat([net(z[:, :, f : f + 1], torch.zeros(1), text=t) for f in range(4)], dim=2)
    assert torch.allclose(packed, single, atol=1e-5)


@pytest.mark.parametrize("frames", [1, 8, 16, 32])
def test_same_weights_run_on_any_frame_count(frames):
    net = randomize(VideoUNet(CFG), temporal_too=True).eval()
    out = net(torch.randn(1, 3, frames, 16, 16), torch.zeros(1), text=txt(1))
    assert out.shape == (1, 3, frames, 16, 16) and torch.isfinite(out).all()


def test_deterministic():
    net = randomize(VideoUNet(CFG), temporal_too=True).eval()
    z = torch.randn(1, 3, 4, 16, 16)
    assert torch.equal(net(z, torch.zeros(1), text=txt(1)), net(z, torch.zeros(1), text=txt(1)))


def test_relative_position_buckets_are_symmetric_and_bounded():
    rel = torch.arange(-200, 201)
    b = relative_position_buckets(rel, 32, 64)
    assert b.min() >= 0 and b.max() < 32
    assert len(set(b[rel > 0].tolist()) & set(b[rel < 0].tolist())) == 0  # direction is kept
    assert b[rel == 0].item() == 0


def test_null_text_uses_learned_null_embedding():
    net = randomize(VideoUNet(CFG), temporal_too=True).eval()
    z = torch.randn(1, 3, 2, 16, 16)
    a = net(z, torch.zeros(1), text=None)
    b = net(z, torch.zeros(1), text=TextEmbedding.null(1, 8))
    assert torch.allclose(a, b)
    assert not torch.allclose(a, net(z, torch.zeros(1), text=txt(1)), atol=1e-3)


def test_bf16_autocast_forward_on_cpu():
    net = randomize(VideoUNet(CFG), temporal_too=True).eval()
    z = torch.randn(1, 3, 4, 16, 16)
    ref = net(z, torch.zeros(1), text=txt(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(z, torch.zeros(1), text=txt(1))
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 1e-3


def test_bf16_weights_forward():
    net = randomize(VideoUNet(CFG), temporal_too=True).eval()
    z = torch.randn(1, 3, 4, 16, 16)
    ref = net(z, torch.zeros(1), text=txt(1))
    out = net.to(torch.bfloat16)(z, torch.zeros(1), text=txt(1))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 1e-3


def test_conditioning_inputs():
    cfg = UNetConfig(
        channels=(16, 32),
        num_res_blocks=1,
        spatial_attn=(False, False),
        cross_attn=(False, False),
        temporal_attn=(False, False),
        cond_channels=4,
        aug_cond=True,
        guidance_cond=True,
        text_dim=8,
        norm_groups=4,
        head_dim=8,
    )
    net = randomize(VideoUNet(cfg), temporal_too=True)
    z, c = torch.randn(1, 3, 4, 16, 16), torch.randn(1, 4, 4, 16, 16)
    out = net(z, torch.zeros(1), cond=c, aug_logsnr=torch.ones(1), guidance=torch.ones(1), text=txt(1))
    assert out.shape == z.shape
    with pytest.raises(ValueError, match="aug_logsnr"):
        net(z, torch.zeros(1), cond=c, guidance=torch.ones(1))
    with pytest.raises(ValueError, match="guidance"):
        net(z, torch.zeros(1), cond=c, aug_logsnr=torch.ones(1))
    with pytest.raises(ValueError, match="4 conditioning channels; received 0"):
        net(z, torch.zeros(1), aug_logsnr=torch.ones(1), guidance=torch.ones(1))


def test_clear_errors_for_bad_shapes_and_text_width():
    net = VideoUNet(CFG)
    with pytest.raises(ValueError, match=r"expects z of shape \(B, 3, T, H, W\)"):
        net(torch.randn(1, 4, 2, 16, 16), torch.zeros(1))
    with pytest.raises(ValueError, match="multiples of 2"):
        net(torch.randn(1, 3, 2, 15, 16), torch.zeros(1))
    wide = TextEmbedding(torch.randn(1, 2, 12), torch.ones(1, 2, dtype=torch.bool), torch.randn(1, 12))
    with pytest.raises(ValueError, match="trained with 8-wide text embeddings but received 12-wide"):
        net(torch.randn(1, 3, 2, 16, 16), torch.zeros(1), text=wide)
    with pytest.raises(ValueError, match="logsnr must be"):
        net(torch.randn(2, 3, 2, 16, 16), torch.zeros(3))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"channels": (16, 30)}, "divisible by norm_groups"),
        ({"spatial_attn": (True,)}, "one entry per level"),
        ({"cross_attn": (True, True), "text_dim": 0}, "text_dim must be > 0"),
        ({"channels": ()}, "non-empty"),
    ],
)
def test_config_validation_messages(kwargs, match):
    base = dict(
        channels=(16, 32),
        spatial_attn=(False, False),
        cross_attn=(False, False),
        temporal_attn=(False, False),
        norm_groups=4,
        head_dim=8,
    )
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        UNetConfig(**base)


def test_stage_config_round_trip_and_role_checks():
    unet = UNetConfig(
        channels=(16, 32),
        spatial_attn=(False, False),
        cross_attn=(False, False),
        temporal_attn=(False, False),
        cond_channels=3,
        aug_cond=True,
        norm_groups=4,
        head_dim=8,
    )
    sc = StageConfig(role="ssr", unet=unet, spatial_factor=2.0)
    assert StageConfig.from_dict(sc.to_dict()) == sc
    with pytest.raises(ValueError, match="needs unet.cond_channels=4"):
        StageConfig(role="tsr", unet=unet, temporal_factor=2)
    with pytest.raises(ValueError, match="Unknown stage role"):
        StageConfig(role="vae", unet=unet)
    with pytest.raises(ValueError, match="unknown fields"):
        StageConfig.from_dict({**sc.to_dict(), "future_field": 1})


def test_patched_network_runs_at_full_size_and_keeps_the_video_image_equivalence():
    cfg = UNetConfig(**{**CFG.to_dict(), "patch_size": 2})
    assert cfg.size_multiple == 4
    net = randomize(VideoUNet(cfg), temporal_too=False).eval()
    z = torch.randn(2, 3, 4, 16, 16)
    out = net(z, torch.zeros(2), text=txt(2))
    assert out.shape == z.shape and out.abs().mean() > 1e-3
    # depth-to-space output: every output pixel of a 2x2 patch comes from its own channel
    assert not torch.allclose(out[..., 0::2, 0::2], out[..., 1::2, 1::2], atol=1e-3)
    for f in range(4):
        assert torch.allclose(out[:, :, f : f + 1], net(z[:, :, f : f + 1], torch.zeros(2), text=txt(2)), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 3, 2, 18, 18), torch.zeros(1), text=txt(1))
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        UNetConfig(**{**CFG.to_dict(), "patch_size": 0})


def test_unpatched_config_from_an_older_file_loads_with_patch_size_one():
    d = CFG.to_dict()
    d.pop("patch_size")
    assert UNetConfig.from_dict(d).patch_size == 1


def test_frame_phase_tells_frames_apart_starts_as_a_no_op_and_leaves_images_alone():
    cfg = UNetConfig(**{**CFG.to_dict(), "frame_phase": True})
    net = VideoUNet(cfg).eval()
    with torch.no_grad():
        for n, p in net.named_parameters():  # random weights, except the phase's zero-initialised output
            if not n.startswith("frame_emb.mlp.2"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))) * 0.2)
        plain = VideoUNet(CFG).eval()
        plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("frame_emb.")})
        z = torch.randn(1, 3, 1, 8, 8).repeat(1, 1, 5, 1, 1)  # five identical frames
        assert torch.allclose(net(z, torch.zeros(1), text=txt(1)), plain(z, torch.zeros(1), text=txt(1)), atol=1e-6)
        net.frame_emb.mlp[2].weight.normal_(0, 0.2)
        out = net(z, torch.zeros(1), text=txt(1))
        assert not torch.allclose(out[:, :, 0], out[:, :, 4], atol=1e-4)  # the phase separates equal frames
        images = net(z, torch.zeros(1), text=txt(1), video_mask=torch.zeros(1))
        assert torch.allclose(images, plain(z, torch.zeros(1), text=txt(1), video_mask=torch.zeros(1)), atol=1e-6)
        assert net(torch.randn(1, 3, 7, 8, 8), torch.zeros(1), text=txt(1)).shape[2] == 7  # any frame count
    d = CFG.to_dict()
    d.pop("frame_phase")
    assert UNetConfig.from_dict(d).frame_phase is False  # files from before the option load as they were


def test_attention_pool_starts_as_a_no_op_then_sees_single_words_and_handles_null_text():
    from cascade.layers import AttentionPool

    pool = AttentionPool(text_dim=8, out_dim=16, heads=2, head_dim=4)
    tok, mask = torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.bool)
    assert torch.equal(pool(tok, mask), torch.zeros(3, 16))  # zero-initialised output layer
    torch.nn.init.normal_(pool.out[2].weight, std=0.5)
    base = pool(tok, mask)
    changed = tok.clone()
    changed[:, 3] = torch.randn(3, 8)  # one word differs
    assert (pool(changed, mask) - base).abs().max() > 1e-3
    masked = mask.clone()
    masked[:, 3] = False  # a padded token does not count, whatever it holds
    assert torch.allclose(pool(changed, masked), pool(tok, masked), atol=1e-6)
    assert torch.isfinite(pool(tok, torch.zeros(3, 5, dtype=torch.bool))).all()  # no token at all: defined
    cfg = UNetConfig(**{**CFG.to_dict(), "text_attn_pool": 2})
    net = VideoUNet(cfg)
    plain = VideoUNet(CFG)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("attn_pool.")})
    z = torch.randn(1, 3, 2, 8, 8)
    assert torch.allclose(net(z, torch.zeros(1), text=txt(1)), plain(z, torch.zeros(1), text=txt(1)), atol=1e-6)
    with pytest.raises(ValueError, match="text_attn_pool"):
        UNetConfig(**{**CFG.to_dict(), "text_attn_pool": 2, "text_dim": 0, "cross_attn": (False, False)})


def test_cond_skip_is_the_same_network_on_the_residual():
    """cond_skip: v(z) = net(z - alpha * base) - sigma * base, with base = alpha_aug * the
    conditioning video, for the very same weights; so a perfect residual model is a perfect model
    of the video, and at high SNR the skip passes the input through."""
    from dataclasses import replace

    from cascade.schedule import alpha_sigma

    cfg = replace(CFG, cond_channels=4, aug_cond=True)
    plain = randomize(VideoUNet(cfg), temporal_too=True).eval()
    skip = VideoUNet(replace(cfg, cond_skip=True)).eval()
    skip.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    b, t = 2, 3
    z = torch.randn(b, 3, t, 8, 8, generator=g)
    cond = torch.randn(b, 4, t, 8, 8, generator=g)
    lam, lam_aug = torch.tensor([-2.0, 3.0]), torch.tensor([1.0, 5.0])
    a, s = (x.reshape(b, 1, 1, 1, 1) for x in alpha_sigma(lam))
    base = cond[:, :3] * alpha_sigma(lam_aug)[0].reshape(b, 1, 1, 1, 1)
    with torch.no_grad():
        got = skip(z, lam, text=txt(b), cond=cond, aug_logsnr=lam_aug)
        want = plain(z - a * base, lam, text=txt(b), cond=cond, aug_logsnr=lam_aug) - s * base
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # per-frame log-SNRs work too
    with torch.no_grad():
        per_frame = skip(z, lam[:, None].expand(b, t), text=txt(b), cond=cond, aug_logsnr=lam_aug)
    torch.testing.assert_close(per_frame, got, atol=1e-5, rtol=1e-5)
    # untrained (zero output layer), clean input, high SNR: the x0 prediction is the input
    fresh = VideoUNet(replace(cfg, cond_skip=True)).eval()
    x = torch.rand(b, 3, t, 8, 8, generator=g) * 2 - 1
    hi = torch.tensor(12.0)
    a, s = alpha_sigma(hi)
    with torch.no_grad():
        v = fresh(a * x, hi, text=txt(b), cond=torch.cat([x, torch.ones(b, 1, t, 8, 8)], 1), aug_logsnr=torch.tensor(20.0))
    torch.testing.assert_close(a * (a * x) - s * v, x, atol=1e-3, rtol=0)


def test_cond_skip_needs_the_conditioning_video():
    from dataclasses import replace

    with pytest.raises(ValueError, match="cond_skip"):
        replace(CFG, cond_channels=0, cond_skip=True)
