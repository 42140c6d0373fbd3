"""The text-binding diagnostic, on denoisers whose answer is known."""

import pytest
import torch
from helpers import tiny_stage

from cascade import binding
from cascade.data.shapes import Attributes


def _clips(n=6):
    return binding.fixed_clips(n, frames=4, size=8, frame_step=2, seed=0)


def test_a_denoiser_that_ignores_the_text_shows_exactly_zero():
    clips, attrs = _clips()
    table = binding.binding_table(lambda z, lam, caps: 0.5 * z, clips, attrs, levels=(-6.0, 0.0))
    for row in table["per_level"].values():
        for v in row.values():
            assert v == {"mean": 0.0, "se": 0.0}
    assert all(v["z"] == 0.0 for v in binding.band_summary(table).values())


def test_the_diagnostic_finds_the_one_word_a_denoiser_uses_with_its_exact_cost():
    clips, attrs = _clips()
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))  # binding_table's noise (seed 0)
    flipped = clips.flip(2)  # each clip played backwards: its motion in the opposite direction

    def denoise(z, lam, caps):
        # an oracle that knows the clips and the noise; it trusts only the caption's direction word
        a, s = binding.alpha_sigma(lam)
        out = []
        for zi, ai, si, c in zip(z, a, s, caps):
            i = int(torch.stack([(zi - ai * clips[k] - si * noise[k]).abs().sum() for k in range(len(clips))]).argmin())
            direction = c.split()[4]  # "a {colour} {shape} moving {direction} {speed}"
            out.append(clips[i] if direction == attrs[i].direction else flipped[i])
        return torch.stack(out)

    table = binding.binding_table(denoise, clips, attrs, levels=(-6.0, 2.0), batch=4)
    expected = (flipped - clips).pow(2).mean(dim=(1, 2, 3, 4))
    for level in (-6.0, 2.0):
        row = table["per_level"][level]
        assert row["direction"]["mean"] == pytest.approx(float(expected.mean()), rel=1e-5)
        assert row["direction"]["se"] == pytest.approx(float(expected.std() / len(expected) ** 0.5), rel=1e-4)
        for k in ("colour", "shape", "speed"):
            assert row[k] == {"mean": 0.0, "se": 0.0}
    se = float(expected.std() / len(expected) ** 0.5)
    assert binding.band_summary(table)["direction"]["z"] == pytest.approx(float(expected.mean()) / se, rel=1e-4)


def test_an_untrained_stage_is_text_blind_and_a_trained_one_is_scored():
    stage = tiny_stage("base", continuation=True)
    for p in stage.net.conv_out.parameters():  # zero output layer (as at initialisation): v = 0, x0 = alpha z
        torch.nn.init.zeros_(p)

    class Enc:
        def encode(self, caps):
            from cascade.text import TextEmbedding

            g = [torch.Generator().manual_seed(sum(map(ord, c))) for c in caps]
            t = torch.stack([torch.randn(3, 8, generator=x) for x in g])
            return TextEmbedding(t, torch.ones(len(caps), 3, dtype=torch.bool), t.mean(1))

    table = binding.stage_binding(stage, Enc(), n=4, levels=(-6.0,))
    assert all(v["mean"] == 0.0 for v in table["per_level"][-6.0].values())
    assert "direction" in binding.report(table)
    with pytest.raises(ValueError, match="base stages"):
        binding.stage_denoiser(tiny_stage("ssr"), Enc())


def test_swap_is_an_involution_for_direction_and_speed_and_changes_every_attribute():
    a = Attributes("white", "triangle", "up", "slowly")
    for k in binding.ATTRIBUTES:
        b = binding.swap(a, k)
        assert getattr(b, k) != getattr(a, k)
        assert all(getattr(b, o) == getattr(a, o) for o in binding.ATTRIBUTES if o != k)
    assert binding.swap(binding.swap(a, "direction"), "direction") == a
