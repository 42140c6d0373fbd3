import pytest
import torch

from cascade.conditioning import (
    check_motion_search,
    known_frames_condition,
    motion_compensated_pairs,
    resize_video,
    ssr_project,
    tsr_condition,
    tsr_output_frames,
    tsr_project,
)
from cascade.windows import WindowedDenoiser, ramp_weights, window_starts


@pytest.mark.parametrize("size", [(32, 32), (48, 20), (7, 9), (16, 16)])
def test_resize_any_factor_and_identity(size):
    v = torch.rand(2, 3, 5, 16, 16)
    out = resize_video(v, size)
    assert out.shape == (2, 3, 5, *size)
    if size == (16, 16):
        assert torch.equal(out, v)


def test_resize_is_antialiased_on_downscale():
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2
    v = (checker.float() * 2 - 1).expand(1, 3, 1, 64, 64)
    down = resize_video(v, (16, 16))
    assert down.abs().max() < 0.05  # high frequencies are averaged away, not aliased


@pytest.mark.parametrize(
    "n,m,mode,expected",
    [(16, 2, "imagen", 32), (16, 2, "interpolate", 31), (5, 4, "imagen", 20), (5, 3, "interpolate", 13), (1, 2, "imagen", 2)],
)
def test_tsr_frame_counts_and_mask(n, m, mode, expected):
    v = torch.arange(n, dtype=torch.float32).reshape(1, 1, n, 1, 1).expand(1, 3, n, 2, 2)
    c = tsr_condition(v, m, mode)
    assert tsr_output_frames(n, m, mode) == expected and c.shape == (1, 4, expected, 2, 2)
    frames = c[0, 0, :, 0, 0]
    mask = c[0, 3, :, 0, 0]
    assert torch.equal(frames, (torch.arange(expected) // m).float())  # nearest earlier input frame
    assert torch.equal(mask, (torch.arange(expected) % m == 0).float())


def test_tsr_errors():
    with pytest.raises(ValueError, match="Unknown frame-count mode"):
        tsr_condition(torch.zeros(1, 3, 4, 2, 2), 2, "linear")
    with pytest.raises(ValueError, match="integer >= 1"):
        tsr_condition(torch.zeros(1, 3, 4, 2, 2), 1.5)
    with pytest.raises(ValueError, match="at least 2 input frames"):
        tsr_condition(torch.zeros(1, 3, 1, 2, 2), 2, "interpolate")
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        tsr_condition(torch.zeros(3, 4, 2, 2), 2)


def test_known_frames_condition():
    known = torch.ones(1, 3, 4, 2, 2)
    c = known_frames_condition(known, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert c.shape == (1, 4, 4, 2, 2)
    assert c[0, :3, :2].eq(1).all() and c[0, :3, 2:].eq(0).all()
    assert torch.equal(c[0, 3, :, 0, 0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="mask must be"):
        known_frames_condition(known, torch.ones(1, 3))


@pytest.mark.parametrize("length,window,overlap", [(40, 16, 4), (16, 16, 4), (17, 16, 8), (100, 32, 8), (5, 16, 4)])
def test_window_starts_cover_everything(length, window, overlap):
    starts = window_starts(length, window, overlap)
    covered = set()
    for s in starts:
        covered |= set(range(s, min(length, s + window)))
    assert covered == set(range(length))
    assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:]))


def test_ramp_weights():
    w = ramp_weights(8, 3, first=False, last=False)
    assert torch.allclose(w, torch.tensor([0.25, 0.5, 0.75, 1, 1, 0.75, 0.5, 0.25]))
    assert ramp_weights(8, 3, first=True, last=True).eq(1).all()


def pointwise(x, sigma, *, cond=None, **_):
    """A denoiser with no interaction across frames or pixels: windows must not change it."""
    return torch.tanh(x) * sigma.reshape(-1, 1, 1, 1, 1) + (0 if cond is None else cond[:, :3])


def test_windows_and_tiles_equal_the_full_pass_for_a_local_denoiser():
    x = torch.randn(2, 3, 37, 24, 40)
    cond = torch.randn(2, 4, 37, 24, 40)
    sigma = torch.full((2,), 0.7)
    full = pointwise(x, sigma, cond=cond)
    evals = []
    wd = WindowedDenoiser(pointwise, {2: (16, 4), 3: (16, 8), 4: (16, 8)}, on_eval=lambda: evals.append(1))
    out = wd(x, sigma, cond=cond)
    assert torch.allclose(out, full, atol=1e-5)
    assert len(evals) == wd.count(x.shape) > 1


def test_windows_blend_in_the_overlap():
    # each window predicts one constant (the mean frame index it sees): outside overlaps the
    # output is that constant, inside an overlap a convex blend ramping from one to the next
    def window_mean(x, sigma, **_):
        return torch.full_like(x, x.mean().item())

    x = torch.arange(20, dtype=torch.float32).reshape(1, 1, 20, 1, 1)
    out = WindowedDenoiser(window_mean, {2: (8, 4)})(x, torch.ones(1))[0, 0, :, 0, 0]
    starts = window_starts(20, 8, 4)
    assert starts == [0, 4, 8, 12]
    means = [s + 3.5 for s in starts]
    assert torch.allclose(out[:4], torch.full((4,), means[0]))
    assert torch.allclose(out[16:], torch.full((4,), means[-1]))
    assert (out[1:] >= out[:-1] - 1e-6).all()  # monotone ramps, no jumps back
    assert (out[4:16] > means[0]).all() and (out[4:16] < means[-1]).all()


# -- consistency projections (SamplingOptions.consistency) ----------------------------------------------


def test_ssr_back_projection_makes_the_output_agree_with_its_input():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(2, 3, 3, 8, 12, generator=g) * 2 - 1
    x0 = torch.rand(2, 3, 3, 16, 24, generator=g) * 2 - 1  # a prediction unrelated to the input
    err = lambda v: (resize_video(v, (8, 12)) - low).abs().mean().item()  # noqa: E731
    one, two, many = (ssr_project(x0, low, k) for k in (1, 2, 100))
    assert err(one) < 0.7 * err(x0) and err(two) < 0.8 * err(one) and err(many) < 1e-4
    # a prediction that already agrees with the input is left alone
    assert torch.allclose(ssr_project(many, low, 2), many, atol=1e-4)


def test_ssr_projection_keeps_flat_areas_flat_and_leaves_texture_to_the_network():
    """Grain where the input is flat is removed; where the input has texture (more contrast than
    tau), the prediction is only back-projected, as without the flat blend."""
    g = torch.Generator().manual_seed(0)
    grain = 0.02 * torch.randn(1, 3, 2, 16, 16, generator=g)
    flat = torch.full((1, 3, 2, 8, 8), -0.3)
    assert torch.allclose(ssr_project(resize_video(flat, (16, 16)) + grain, flat), torch.full_like(grain, -0.3), atol=1e-5)
    texture = torch.rand(1, 3, 2, 8, 8, generator=g) * 2 - 1
    x0 = resize_video(texture, (16, 16)) + grain
    assert torch.allclose(ssr_project(x0, texture), ssr_project(x0, texture, tau=0), atol=1e-4)
    # half flat, half texture: four low-res pixels from the texture, the grain is gone, not merely smaller
    half = torch.cat([flat[..., :4], texture[..., 4:]], dim=-1)
    x0 = resize_video(half, (16, 16)) + grain
    left = (slice(None),) * 3 + (slice(None), slice(0, 2))
    up = resize_video(half, (16, 16))
    assert (ssr_project(x0, half)[left] - up[left]).abs().max() < 0.1 * (
        ssr_project(x0, half, tau=0)[left] - up[left]
    ).abs().max()


@pytest.mark.parametrize("mode", ["imagen", "interpolate"])
def test_tsr_projection_keeps_the_input_frames_and_copies_what_does_not_move(mode):
    g = torch.Generator().manual_seed(1)
    n, f = 5, 2
    n_out = tsr_output_frames(n, f, mode)
    low = torch.rand(1, 3, n, 6, 6, generator=g) * 2 - 1
    low[..., :3, :] = 0.25  # the top half of every input frame is the same: it does not move
    x0 = torch.rand(1, 3, n_out, 6, 6, generator=g) * 2 - 1
    out = tsr_project(x0, low, f, tau=0.1)
    assert torch.allclose(out[:, :, ::f][:, :, :n], low, atol=1e-6)  # input frames exactly
    between = torch.arange(n_out) % f != 0
    between &= torch.arange(n_out) < (n - 1) * f  # frames between two input frames
    assert torch.allclose(out[:, :, between, :3], torch.full_like(out[:, :, between, :3], 0.25), atol=1e-6)
    # where the input frames differ a lot the network's prediction stays, moved by the interpolated error only
    no_agreement = tsr_project(x0, low, f, tau=0.0)
    moving = (low[:, :, :-1, 3:] - low[:, :, 1:, 3:]).abs().amax(1) > 0.5  # (1, n-1, 3, 6)
    idx = torch.arange(n - 1) * f + 1  # the inserted frame after each input frame
    a, b = out[:, :, idx, 3:], no_agreement[:, :, idx, 3:]
    assert torch.allclose(a.permute(1, 0, 2, 3, 4)[:, moving], b.permute(1, 0, 2, 3, 4)[:, moving], atol=1e-3)
    if mode == "imagen":  # past the last input frame: its error is held, nothing is blended
        assert torch.allclose(out[:, :, -1], x0[:, :, -1] + (low[:, :, -1] - x0[:, :, -f]), atol=1e-6)


def _block(x: int, y: int = 10, size: int = 32, side: int = 6, colour=(0.9, 0.2, -0.3)) -> torch.Tensor:
    """A frame (3, size, size) in [-1, 1]: a block of ``side`` px at (x, y) on a dark background (-0.8)."""
    f = torch.full((3, size, size), -0.8)
    f[:, y : y + side, x : x + side] = torch.tensor(colour).reshape(3, 1, 1)
    return f


def test_motion_search_finds_the_displacement_the_two_frames_agree_on():
    """A block 4 px further right in the second frame: along that displacement, both frames sampled for
    the time halfway show the block halfway, exactly; with no search they are the frames themselves."""
    a, b, mid = _block(8)[None], _block(12)[None], _block(10)[None]
    sa, sb, _ = motion_compensated_pairs(a, b, torch.tensor([0.5]), radius=5)
    assert torch.allclose(sa, mid, atol=1e-5) and torch.allclose(sb, mid, atol=1e-5)
    # a quarter of the way: the block 1 px along, seen from both frames
    sa, sb, _ = motion_compensated_pairs(a, b, torch.tensor([0.25]), radius=5)
    assert torch.allclose(sa, _block(9)[None], atol=1e-5) and torch.allclose(sb, _block(9)[None], atol=1e-5)
    # out of reach (the block moved 4 px, the search looks 1 px) or no search: nothing lines the block up
    far_a, far_b, _ = motion_compensated_pairs(a, b, torch.tensor([0.5]), radius=1)
    assert (far_a - far_b).abs().amax() > 1
    none = motion_compensated_pairs(a, b, torch.tensor([0.5]), radius=0)
    assert none.a is a and none.b is b and not none.clear.any()


def test_motion_search_says_where_its_match_is_clear():
    """Clear: a match of 1.5 px or more that agrees far better than any shorter displacement, over a
    patch with texture. The block moved 4 px: clear around it (within the 7x7 patch of its path) and
    nowhere else; moved 1 px (the in-place blend's job) or two flat frames: clear nowhere."""
    clear = motion_compensated_pairs(_block(8)[None], _block(12)[None], torch.tensor([0.5]), radius=5).clear
    rows, cols = clear[0, 0].nonzero().unbind(1)
    assert clear.any() and rows.min() >= 10 - 3 and rows.max() <= 15 + 3 and cols.min() >= 8 - 1 and cols.max() <= 17 + 3
    assert not motion_compensated_pairs(_block(8)[None], _block(9)[None], torch.tensor([0.5]), radius=5).clear.any()
    flat = torch.full((1, 3, 32, 32), 0.1)
    assert not motion_compensated_pairs(flat, flat, torch.tensor([0.5]), radius=5).clear.any()


def test_a_clear_match_takes_precedence_over_the_in_place_blend(monkeypatch):
    """A block whose colour is close to its background (0.35 apart) moving 4 px per frame: in place
    its two frames almost agree (weight 0.83), so the in-place blend alone would leave a ghost of the
    block at both ends; the clear match copies it where it is halfway, exactly."""
    import cascade.conditioning as conditioning  # noqa: PLC0415

    dim = lambda x: _block(x, colour=(-0.45, -0.45, -0.45))  # noqa: E731
    low = torch.stack([dim(4 + 4 * i) for i in range(4)], dim=1)[None]
    truth = torch.stack([dim(4 + 2 * i) for i in range(7)], dim=1)[None]
    x0 = torch.zeros_like(truth)
    err = lambda v: (v[:, :, 1::2] - truth[:, :, 1::2]).abs().amax()  # noqa: E731
    assert err(tsr_project(x0, low, 2, motion_radius=4)) < 1e-4
    monkeypatch.setattr(conditioning, "TSR_CLEAR_MOTION", 99.0)  # no match is clear: the old order
    assert err(tsr_project(x0, low, 2, motion_radius=4)) > 0.1


def test_tsr_projection_with_motion_search_copies_a_moving_object_between_its_input_frames():
    """Input frames of a block moving 4 px per frame: with the search, the inserted frames show the block
    where it is halfway (much closer than the projection without it, which leaves the network's guess
    there); what does not move and the input frames are as before."""
    low = torch.stack([_block(4 + 4 * i) for i in range(4)], dim=1)[None]  # (1, 3, 4, 32, 32)
    truth = torch.stack([_block(4 + 2 * i) for i in range(7)], dim=1)[None]
    x0 = torch.zeros_like(truth)  # a prediction that knows nothing
    still = tsr_project(x0, low, 2)
    moved = tsr_project(x0, low, 2, motion_radius=4)
    assert torch.allclose(moved[:, :, ::2], low, atol=1e-6) and torch.allclose(still[:, :, ::2], low, atol=1e-6)
    err = lambda v: (v[:, :, 1::2] - truth[:, :, 1::2]).abs().mean()  # noqa: E731
    assert err(moved) < 0.05 * err(still)
    background = truth[:, :, 1::2] == -0.8
    assert torch.allclose(moved[:, :, 1::2][background], truth[:, :, 1::2][background], atol=0.05)
    assert torch.equal(tsr_project(x0, low, 2, motion_radius=0), still)


@pytest.mark.parametrize("bad", [-1, 8.5, True, "3"])
def test_motion_search_must_be_a_distance_within_reach(bad):
    with pytest.raises(ValueError, match="motion_search"):
        check_motion_search(bad)


def test_tsr_projection_refuses_too_few_output_frames():
    with pytest.raises(ValueError, match="output frames"):
        tsr_project(torch.zeros(1, 3, 6, 4, 4), torch.zeros(1, 3, 5, 4, 4), 2)
