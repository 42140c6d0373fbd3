"""Phenaki's MaskGIT stage: the masking schedule, the training loss, CFG on logits, the unmasking
order and seeded sampling with given (context) tokens."""

from __future__ import annotations

import math

import pytest
import torch

from cascade.maskgit import MaskGIT, MaskGITConfig, guided_logits, mask_schedule, masking_loss, sample_tokens
from cascade.text import TextEmbedding

CFG = MaskGITConfig(codebook_size=11, grid=2, dim=32, depth=2, head_dim=16, ff_mult=2, text_dim=8)


def text(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TextEmbedding(torch.randn(b, 3, 8, generator=g), torch.ones(b, 3, dtype=torch.bool), torch.randn(b, 8, generator=g))


def randomized(seed=0):
    net = MaskGIT(CFG)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net.eval()


def test_cosine_mask_schedule():
    assert float(mask_schedule(0.0)) == 1.0
    assert float(mask_schedule(1.0)) == pytest.approx(0.0, abs=1e-7)
    r = torch.linspace(0, 1, 11)
    assert bool((mask_schedule(r)[1:] <= mask_schedule(r)[:-1]).all())
    assert float(mask_schedule(0.5)) == pytest.approx(math.cos(math.pi / 4))


def test_masking_loss_masks_by_the_schedule_and_never_given_tokens():
    net = randomized().train()
    ids = torch.randint(0, 11, (400, 3, 2, 2), generator=torch.Generator().manual_seed(0))
    given = torch.zeros_like(ids, dtype=torch.bool)
    given[:, 0] = True  # the first token step is context
    loss, stats = masking_loss(net, ids, text(400), generator=torch.Generator().manual_seed(1), given=given)
    assert loss.requires_grad and stats["ce"] > 0
    # masked share of the free tokens: E[cos(pi r / 2)] = 2 / pi (at least one token each)
    assert stats["mask_fraction"] / (8 / 12) == pytest.approx(2 / math.pi, abs=0.05)
    loss.backward()
    # a given token is never masked: recompute the masking with the same stream
    seen = {}
    orig = net.forward

    def spy(inp, t):
        seen["inp"] = inp
        return orig(inp, t)

    net.forward = spy
    masking_loss(net, ids[:50], text(50), generator=torch.Generator().manual_seed(2), given=given[:50])
    assert bool((seen["inp"][:, 0] == ids[:50, 0]).all())
    assert bool((seen["inp"][:, 1:] == CFG.mask_id).any())
    with pytest.raises(ValueError, match="not given"):
        masking_loss(net, ids[:2], text(2), given=torch.ones_like(ids[:2], dtype=torch.bool))


def test_cfg_on_logits():
    net = randomized()
    ids = torch.full((2, 2, 2, 2), CFG.mask_id)
    t = text()
    with torch.no_grad():
        assert torch.equal(guided_logits(net, ids, t, 0.0), net(ids, t))
        cond, null = net(ids, t), net(ids, TextEmbedding.null(2, 8))
        torch.testing.assert_close(guided_logits(net, ids, t, 3.0), 4 * cond - 3 * null)
        assert not torch.allclose(cond, null)


def test_sampling_is_seeded_keeps_given_tokens_and_follows_the_schedule():
    net = randomized()
    t = text()
    counts = []
    a = sample_tokens(net, t, 3, steps=5, w=1.0, seed=3, callback=lambda i, ids: counts.append(int((ids == CFG.mask_id).sum())))
    b = sample_tokens(net, t, 3, steps=5, w=1.0, seed=3)
    c = sample_tokens(net, t, 3, steps=5, w=1.0, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2, 3, 2, 2) and int(a.max()) < CFG.codebook_size
    n = 3 * 4  # unknown tokens per item
    assert counts == [2 * math.floor(math.cos(math.pi / 2 * (i + 1) / 5) * n) for i in range(4)] + [0]
    given = torch.full((2, 3, 2, 2), -1)
    given[:, 0] = torch.tensor([[1, 2], [3, 4]])
    out = sample_tokens(net, t, 3, steps=4, seed=0, given=given)
    assert torch.equal(out[:, 0], given[:, 0])
    with pytest.raises(ValueError, match="given"):
        sample_tokens(net, t, 3, given=torch.full((2, 2, 2, 2), -1))


class _Peaked(torch.nn.Module):
    """Every position predicts token 0, with a confidence that grows with the position."""

    config = CFG

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, text):
        b, s, g = ids.shape[0], ids.shape[1], CFG.grid
        pos = torch.arange(s * g * g, dtype=torch.float32).reshape(1, s, g, g, 1)
        logits = torch.zeros(b, s, g, g, CFG.codebook_size)
        return logits + torch.nn.functional.one_hot(torch.zeros(b, s, g, g, dtype=torch.long), CFG.codebook_size) * (pos + 20)


def test_the_most_confident_tokens_are_kept_first():
    seen = []
    sample_tokens(
        _Peaked(), text(1), 2, steps=4, choice_temperature=0.0, seed=0, callback=lambda i, ids: seen.append(ids.clone())
    )
    first = (seen[0] != CFG.mask_id).reshape(-1)
    n_kept = int(first.sum())
    assert 0 < n_kept < 8
    assert first.tolist() == [False] * (8 - n_kept) + [True] * n_kept  # the highest positions = most confident


def test_refuses_bad_input():
    net = MaskGIT(CFG)
    with pytest.raises(ValueError, match="token ids"):
        net(torch.zeros(1, 2, 3, 3, dtype=torch.long), text(1))
    with pytest.raises(ValueError, match="in \\[0, 11\\]"):
        net(torch.full((1, 1, 2, 2), 12), text(1))
    with pytest.raises(ValueError, match="8-wide"):
        net(torch.zeros(1, 1, 2, 2, dtype=torch.long), TextEmbedding.null(1, 4))
    with pytest.raises(ValueError, match="unknown fields"):
        MaskGITConfig.from_dict({**CFG.to_dict(), "vocab": 3})
    assert MaskGITConfig.from_dict(CFG.to_dict()) == CFG


def test_it_learns_tokens_from_text():
    torch.manual_seed(0)
    net = MaskGIT(CFG).train()
    ids = torch.tensor([[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]])  # one token step per text
    t = text(2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        loss, _ = masking_loss(net, ids, t, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = sample_tokens(net.eval(), t, 1, steps=4, w=1.0, temperature=0.5, seed=0)
    assert torch.equal(out, ids)
