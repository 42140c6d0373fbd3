"""Model management: the low-VRAM mode that streams a stage's weights one layer at a time, the
loader's offload modes, memory estimates handed to ComfyUI, and the managed text encoder."""

import pytest
import torch
from packimport import load_pack

from cascade.offload import SequentialOffload
from cascade.pipeline import SamplingOptions, generate, upsample_spatial
from cascade.stage import load_stage
from cascade.text import load_text_encoder

pack = load_pack()
M = pack.NODE_CLASS_MAPPINGS
adapter = pack.nodes.adapter
MODELS = pack.nodes.adapter.PACK_MODELS / "imagen_video"


class PoisonedOffload(SequentialOffload):
    """Low-VRAM mode on one CPU: while a module is "offloaded" its own tensors live on the meta
    device (no data), so any use of a weight outside its own module's forward, even of its device,
    fails or leaves the video on the meta device, as it would fail on a GPU."""

    def __init__(self, net):
        super().__init__(net, "cpu", "cpu")
        self.real = {}

    def _to(self, module, device, non_blocking):
        pass

    def _pre(self, module, args):
        for store in (module._parameters, module._buffers):
            for name in store:
                if (module, name) in self.real:
                    store[name] = self.real.pop((module, name))
        self.moves += 1

    def _post(self, module, args, output):
        self._poison(module)

    def _poison(self, module):
        for store in (module._parameters, module._buffers):
            for name, t in store.items():
                if t is not None:
                    self.real[(module, name)] = t
                    meta = t.detach().to("meta")
                    store[name] = torch.nn.Parameter(meta, requires_grad=False) if isinstance(t, torch.nn.Parameter) else meta

    def attach(self):
        super().attach()
        for m in self.net.modules():
            self._poison(m)
        return self


@pytest.fixture(scope="module")
def text():
    return load_text_encoder(None).encode(["a red circle moving right slowly"])


@pytest.mark.parametrize("stage_file", ["demo_base_16f_32px.safetensors", "demo_ssr_x2_64px.safetensors"])
def test_low_vram_streams_every_layer_and_gives_the_same_video(stage_file, text):
    stage = load_stage(MODELS / stage_file)
    opts = SamplingOptions(steps=2, guidance=4.0 if stage.role == "base" else 0.0, seed=3)

    def run():
        if stage.role == "base":
            return generate(stage, text, frames=8, options=opts)
        low = torch.rand(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        return upsample_spatial(stage, low, text, options=opts)

    whole = run()
    stage.offload = PoisonedOffload(stage.net).attach()
    streamed = run()
    moves = stage.offload.moves
    for (module, name), t in stage.offload.real.items():  # the real weights back
        (module._parameters if name in module._parameters else module._buffers)[name] = t
    stage.offload.detach()
    assert streamed.device.type == "cpu", "a weight was used outside its own module's forward"
    assert torch.allclose(streamed, whole, atol=1e-5)
    owners = sum(1 for m in stage.net.modules() if next(m.parameters(recurse=False), None) is not None)
    assert moves >= 2 * owners  # every weight-owning module visited at least once per evaluation


def test_low_vram_mode_reports_the_execution_device():
    stage = load_stage(MODELS / "demo_tsr_x2_32px.safetensors")
    stage.low_vram("cpu")
    assert stage.offload.attached and stage.device == torch.device("cpu")
    stage.low_vram(None)
    assert stage.offload is None and all(not m._forward_pre_hooks for m in stage.net.modules())


def test_loader_offload_modes(monkeypatch):
    loader = M["ImagenVideoModelLoader"]()
    enc = M["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]
    cond = M["ImagenVideoTextEncode"]().encode(enc, "a red circle moving right slowly")[0]
    calls = {"unload": 0, "need": []}
    orig_load = adapter.load_to_device_together
    monkeypatch.setattr(adapter, "unload", lambda patcher, module: calls.__setitem__("unload", calls["unload"] + 1))

    def spy_load(items, memory_required=0):
        calls["need"].append(memory_required)
        return orig_load(items, memory_required)

    monkeypatch.setattr(adapter, "load_to_device_together", spy_load)
    args = dict(frames=8, width=32, height=32, fps=4.0, seed=1, steps=1, guidance=4.0, sampler_name="ddim", show_animation=False)
    for mode, unloads in (("auto", 0), ("after_use", 1), ("low_vram", 0)):  # low_vram on a CPU: nothing to stream
        calls["unload"] = 0
        model = loader.load("demo_base_16f_32px.safetensors", "auto", "default", mode)[0]
        assert model.offload == mode
        M["ImagenVideoSampler"]().sample(model, cond, **args)
        assert calls["unload"] == unloads, mode
    assert all(n > 1_000_000 for n in calls["need"])  # the run's activation estimate reaches model management
    with pytest.raises(ValueError, match="offload must be one of"):
        loader.load("demo_base_16f_32px.safetensors", "auto", "default", "sometimes")


def test_text_encoder_is_loaded_for_encoding_only(monkeypatch):
    loaded = []
    orig = adapter.load_to_device
    monkeypatch.setattr(adapter, "load_to_device", lambda p, m, d, mem=0: (loaded.append(d), orig(p, m, d, mem)))
    enc = M["ImagenVideoTextEncoderLoader"]().load("all-MiniLM-L6-v2 (embedded)")[0]
    assert next(enc.encoder.model.parameters()).device == adapter.offload_device()
    emb = enc.encode("a red circle")
    assert loaded == [enc.device] and emb.batch == 1
    assert enc.encode(["a", "b"]).batch == 2


@pytest.mark.gpu
def test_low_vram_on_cuda_matches_the_whole_model_with_less_memory(text):
    stage = load_stage(MODELS / "demo_base_16f_32px.safetensors").to("cuda")
    opts = SamplingOptions(steps=4, guidance=4.0, seed=3)
    torch.cuda.reset_peak_memory_stats()
    whole = generate(stage, text, frames=16, options=opts)
    peak_whole = torch.cuda.max_memory_allocated()
    stage.to("cpu")
    torch.cuda.empty_cache()
    stage.low_vram("cuda")
    torch.cuda.reset_peak_memory_stats()
    streamed = generate(stage, text, frames=16, options=opts)
    peak_streamed = torch.cuda.max_memory_allocated()
    assert torch.allclose(streamed.cpu(), whole.cpu(), atol=1e-4)
    assert peak_streamed < peak_whole
    assert all(p.device.type == "cpu" for p in stage.net.parameters())
