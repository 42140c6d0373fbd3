"""Phenaki's C-ViViT tokenizer: token layout, exact causality, the FSQ bottleneck, trainability."""

from __future__ import annotations

import pytest
import torch

from cascade.cvivit import FSQ, CViViT, CViViTConfig

CFG = CViViTConfig(
    image_size=16, patch_size=4, temporal_patch=2, dim=32, spatial_depth=1, temporal_depth=2, head_dim=16, ff_mult=2
)


def randomized(cfg=CFG, seed=0) -> CViViT:
    """Every weight random (zero-initialised outputs would hide any leak through them)."""
    net = CViViT(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net.eval()


def video(frames, b=2, seed=1):
    return torch.rand(b, 3, frames, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_token_layout_for_images_and_videos():
    net = randomized()
    assert CFG.tokens(1) == 16 and CFG.tokens(9) == 5 * 16
    for frames in (1, 3, 9):
        idx = net.tokenize(video(frames))
        assert idx.shape == (2, CFG.steps(frames), 4, 4)
        assert idx.dtype == torch.long and int(idx.min()) >= 0 and int(idx.max()) < CFG.codebook_size
        assert net.detokenize(idx).shape == (2, 3, frames, 16, 16)
    # against a per-frame image tokenizer with the same patch: 1 + n steps instead of 1 + n * t_p frames
    assert CFG.tokens(17) * 2 == 16 * (17 + 1)


def test_tokens_of_the_first_steps_do_not_depend_on_later_frames():
    net = randomized()
    a = video(9)
    for k in (1, 2, 4):  # token steps kept; they cover the first 1 + (k - 1) * t_p frames
        keep = CFG.frames(k)
        b = a.clone()
        b[:, :, keep:] = video(9 - keep, seed=7)
        za, zb = net.encode(a), net.encode(b)
        assert torch.equal(za[:, :k], zb[:, :k])  # exact, not approximate
        assert not torch.allclose(za[:, k:], zb[:, k:])  # the later steps do see the change
        ia, ib = net.tokenize(a), net.tokenize(b)
        assert torch.equal(ia[:, :k], ib[:, :k])
        # decoding is causal too: the frames of the first k steps come from their own tokens only
        ib2 = ib.clone()
        ib2[:, k:] = (ib2[:, k:] + 1) % CFG.codebook_size
        assert torch.equal(net.detokenize(ia)[:, :, :keep], net.detokenize(ib2)[:, :, :keep])
    # and a shorter clip gives the same first tokens as the long one
    assert torch.equal(net.tokenize(a[:, :, :5]), net.tokenize(a)[:, :3])


def test_fsq_round_trip_and_straight_through_gradient():
    fsq = FSQ((3, 5, 7))
    all_idx = torch.arange(3 * 5 * 7)
    codes = fsq.codes(all_idx)
    assert codes.abs().max() == 1 and len({tuple(c.tolist()) for c in codes}) == 105
    q, idx = fsq(torch.atanh(codes * 0.999))  # a latent whose tanh lands just inside each grid point
    torch.testing.assert_close(idx, all_idx)
    z = torch.randn(50, 3, requires_grad=True)
    q, idx = fsq(z)
    torch.testing.assert_close(fsq.codes(idx), q.detach())
    q.sum().backward()
    assert z.grad is not None and bool((z.grad != 0).all())
    with pytest.raises(ValueError, match="indices"):
        fsq.codes(torch.tensor([105]))


def test_bad_inputs_are_refused():
    net = CViViT(CFG)
    with pytest.raises(ValueError, match="1 \\+ n \\* 2 frames"):
        net.tokenize(video(4))
    with pytest.raises(ValueError, match="videos"):
        net.tokenize(torch.zeros(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        CViViTConfig(fsq_levels=(8, 5))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        CViViTConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="unknown fields"):
        CViViTConfig.from_dict({**CFG.to_dict(), "codebook": 10})
    assert CViViTConfig.from_dict(CFG.to_dict()) == CFG


def test_it_learns_to_reconstruct():
    torch.manual_seed(0)
    net = CViViT(CFG)
    x = video(5, b=2)
    x = torch.nn.functional.avg_pool3d(x, (1, 4, 4)).repeat_interleave(4, -1).repeat_interleave(4, -2)  # patch-smooth clips
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, stats = net.loss(x)
        first = first if first is not None else stats["mse"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["mse"] < 0.2 * first


def test_vq_quantiser_trains_tokenizes_and_is_causal_like_fsq():
    from cascade.cvivit import CViViT, CViViTConfig, reconstruction_loss

    cfg = CViViTConfig(
        image_size=16, patch_size=4, dim=32, spatial_depth=1, temporal_depth=1, quantiser="vq", vq_codes=16, vq_dim=4
    )
    assert cfg.codebook_size == 16 and cfg.code_dim == 4 and cfg.to_dict()["quantiser"] == "vq"
    torch.manual_seed(0)
    net = CViViT(cfg)
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    recon, idx = net(video)
    loss, stats = reconstruction_loss(recon, idx, video, net.quantiser_loss)
    assert stats["vq_loss"] > 0 and loss > stats["mse"]  # the codebook and commitment terms are in the loss
    loss.backward()
    assert net.quantiser.codebook.weight.grad.abs().sum() > 0 and net.to_code.weight.grad.abs().sum() > 0
    ids = net.tokenize(video)
    assert ids.shape == (2, 3, 4, 4) and int(ids.max()) < 16
    assert net.detokenize(ids).shape == video.shape
    later = video.clone()
    later[:, :, 3:] = torch.rand_like(later[:, :, 3:])
    assert torch.equal(net.tokenize(later)[:, :2], ids[:, :2])  # still causal
    with pytest.raises(ValueError, match="quantiser"):
        CViViTConfig(quantiser="lfq")


def test_an_fsq_configuration_reads_as_before_vq_existed():
    from cascade.cvivit import CViViTConfig

    d = CViViTConfig().to_dict()
    assert "quantiser" not in d and "vq_codes" not in d and CViViTConfig.from_dict(d) == CViViTConfig()
