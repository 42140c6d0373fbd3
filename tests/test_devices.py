"""Every sampling path keeps its tensors on the stage's device and runs the network in the
stage's dtype: plain, windowed, tiled, repeated TSR passes, story (streamed through TSR and SSR),
distilled students. Runs on the CPU always and on CUDA when a GPU is present (marker ``gpu``)."""

import pytest
import torch
from helpers import tiny_stage
from test_story import enc

from cascade.pipeline import SamplingOptions, generate, upsample_spatial, upsample_temporal
from cascade.story import Scene, StoryOptions, run_story
from cascade.text import TextEmbedding

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


class Watch:
    """Forward pre-hooks that record every tensor reaching the network (inputs, conditioning and
    text) and the dtype the first convolution computes in."""

    def __init__(self, stage):
        self.stage, self.bad, self.calls = stage, [], 0
        net = stage.net
        net.register_forward_pre_hook(self.inputs, with_kwargs=True)
        net.conv_in.register_forward_pre_hook(self.conv)

    def _check(self, name, t):
        dev = self.stage.device
        if isinstance(t, TextEmbedding):
            for part in ("tokens", "mask", "pooled"):
                self._check(f"{name}.{part}", getattr(t, part))
        elif isinstance(t, torch.Tensor) and t.device.type != dev.type:
            self.bad.append(f"{name} on {t.device}, stage on {dev}")

    def inputs(self, mod, args, kwargs):
        self.calls += 1
        for i, a in enumerate(args):
            self._check(f"arg{i}", a)
        for k, v in kwargs.items():
            self._check(k, v)

    def conv(self, mod, args):
        if args[0].dtype != mod.weight.dtype:
            self.bad.append(f"conv_in computes in {args[0].dtype}, weights are {mod.weight.dtype}")


def text(device):
    return enc(["a"]).to(device)


def _stage(role, device, dtype, **kw):
    s = tiny_stage(role, **kw).to(device=device, dtype=dtype)
    return s, Watch(s)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_sampling_path_stays_on_the_stage_device_and_dtype(device, dtype):
    opts = SamplingOptions(steps=2, guidance=2.0, seed=1)
    watches, outputs = [], []

    base, w = _stage("base", device, dtype, continuation=True)
    watches.append(w)
    outputs.append(generate(base, text(device), options=opts))  # plain
    known = torch.zeros(1, 3, 4, 8, 8)
    outputs.append(generate(base, text(device), options=opts, known=known, known_mask=torch.ones(1, 4)))  # continuation

    nochannels, w = _stage("base", device, dtype)
    watches.append(w)
    outputs.append(generate(nochannels, text(device), options=opts, known=known, known_mask=torch.ones(1, 4), replacement=True))

    ssr, w = _stage("ssr", device, dtype)
    watches.append(w)
    low = torch.rand(1, 3, 7, 8, 8) * 2 - 1
    outputs.append(upsample_spatial(ssr, low, text(device), options=opts, window=4, overlap=1))  # windowed
    outputs.append(upsample_spatial(ssr, low, text(device), options=opts, window=4, overlap=1, tile=8, tile_overlap=4))  # tiled

    tsr, w = _stage("tsr", device, dtype)
    watches.append(w)
    outputs.append(upsample_temporal(tsr, low, text(device), multiplier=4, options=opts, window=8, overlap=2))  # two passes

    student, w = _stage("base", device, dtype, distilled=True)
    watches.append(w)
    outputs.append(
        generate(student, text(device), options=SamplingOptions(steps=2, sampler="distilled_stochastic", guidance=2.0))
    )

    story = []
    run_story(
        [Scene("a", 6), Scene("b", 4)],
        base=base,
        encode=lambda p: enc(p),  # CPU text, as an encoder on another device would give it
        tsr=tsr,
        ssr=ssr,
        options={"base": opts, "tsr": opts, "ssr": opts},
        story=StoryOptions(window=4, context=2, transition="blend"),
        sink=lambda f, s: story.append(f),
        sr_chunk=4,
        sr_overlap=1,
    )
    outputs.extend(story)

    assert all(w.calls for w in watches)
    assert [b for w in watches for b in w.bad] == []
    for out in outputs:
        assert out.device.type == torch.device(device).type and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_precision_names_mean_the_same_dtype_in_the_cli_the_evaluation_and_the_loader_node(caplog):
    from cascade.checks import check_device, resolve_precision

    assert resolve_precision("auto", "cpu") == torch.float32  # a CPU run keeps the videos of before
    with caplog.at_level("WARNING"):
        assert [resolve_precision(p, "cpu") for p in ("fp32", "bf16")] == [torch.float32, torch.bfloat16]
        assert not caplog.records
        assert resolve_precision("fp16", "cpu") == torch.float16  # kept as asked, with its cost said
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["fp16 on the CPU is slow"]
    with pytest.raises(ValueError, match="Unknown precision 'half'; choose auto, fp32, fp16, bf16"):
        resolve_precision("half", "cpu")
    assert check_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(ValueError, match="Unknown device"):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            check_device("cuda")


@pytest.mark.gpu
def test_auto_precision_on_a_gpu_is_bf16_or_fp16_and_a_missing_gpu_index_is_refused():
    from cascade.checks import check_device, resolve_precision

    assert resolve_precision("auto", "cuda") in (torch.bfloat16, torch.float16)
    with pytest.raises(ValueError, match="CUDA GPU"):
        check_device(f"cuda:{torch.cuda.device_count()}")
