"""Our Video U-Net vs imagen-pytorch's Unet3D and diffusers' UNet3DConditionModel on the CPU.

Run in the benchmark environment (``bash benchmarks/setup_env.sh``)::

    . .venv-bench/bin/activate && python benchmarks/unet_speed.py [--rounds 3]

Configurations (batch 2 = a classifier-free-guidance pair, text 16 tokens x 384):
* BASE: 16 frames 32x32, 3 levels (c, 2c, 4c), 2 res blocks per level, spatial self-attention,
  text cross-attention and temporal attention at 16x16, 8x8 and the middle;
* SSR: 16 frames, 32 -> 64 px (the U-Net runs at 64x64 with the upsampled low-res video
  concatenated on channels), 3 levels (c, 2c, 4c), convolutional.
Ours is built twice per configuration, with widths chosen so its parameter count matches each
baseline ("matched parameter count"). All timings are medians of interleaved rounds in one
process; peak memory is measured in a fresh child process per model: the peak resident size
(VmHWM, reset after building the model and one warm-up call) above the resident size before the call.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import peak_mb, reset_peak, rss_mb  # noqa: E402

from cascade.config import UNetConfig  # noqa: E402
from cascade.text import TextEmbedding  # noqa: E402
from cascade.unet import VideoUNet  # noqa: E402

B, T, L, D = 2, 16, 16, 384


# --- model builders ------------------------------------------------------------------------------


def ours_base(c: int) -> UNetConfig:
    return UNetConfig(
        channels=(c, 2 * c, 4 * c),
        num_res_blocks=2,
        spatial_attn=(False, True, True),
        cross_attn=(False, True, True),
        temporal_attn=(False, True, True),
        text_dim=D,
        head_dim=next(h for h in (64, 32, 16, 8) if (2 * c) % h == 0),
        norm_groups=8,
    )


def ours_ssr(c: int) -> UNetConfig:
    return UNetConfig(
        channels=(c, 2 * c, 4 * c),
        num_res_blocks=2,
        spatial_attn=(False,) * 3,
        cross_attn=(False,) * 3,
        temporal_attn=(False,) * 3,
        cond_channels=3,
        aug_cond=True,
        text_dim=D,
        norm_groups=8,
    )


def count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def matched_width(make, target: int) -> int:
    """The width c whose parameter count is closest to ``target``."""
    best = None
    for c in range(16, 400, 8):
        with torch.device("meta"):
            n = count(VideoUNet(make(c)))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (c, n)
    return best[0]


def build(name: str, frames: int = T):
    """-> (module, call(x_batch) -> out, example inputs)."""
    torch.manual_seed(0)
    kind, lib = name.split(":")[0], name.split(":")[1]
    text = torch.randn(B, L, D)
    if kind == "BASE":
        x = torch.randn(B, 3, frames, 32, 32)
        low = None
    else:
        x = torch.randn(B, 3, frames, 64, 64)
        low = torch.randn(B, 3, frames, 32, 32)
    if lib == "ours":
        c = int(name.split(":")[2])
        net = VideoUNet(ours_base(c) if kind == "BASE" else ours_ssr(c))
        emb = TextEmbedding(text, torch.ones(B, L, dtype=torch.bool), text.mean(1))
        kw = {"text": emb}
        if kind == "SSR":
            kw.update(
                cond=torch.nn.functional.interpolate(low.transpose(1, 2).reshape(-1, 3, 32, 32), size=(64, 64), mode="bilinear")
                .reshape(B, frames, 3, 64, 64)
                .transpose(1, 2),
                aug_logsnr=torch.zeros(B),
            )
        logsnr = torch.zeros(B)
        return net, (lambda: net(x, logsnr, **kw))
    from baselines import make_diffusers_unet3d, make_imagen_unet3d

    if lib == "imagen":
        if kind == "BASE":
            net, fn = make_imagen_unet3d(
                dim=64,
                dim_mults=(1, 2, 4),
                text_embed_dim=D,
                num_resnet_blocks=1,
                layer_attns=(False, True, True),
                layer_cross_attns=(False, True, True),
            )
            return net, (lambda: fn(x, text_embeds=text))
        net, fn = make_imagen_unet3d(
            dim=32,
            dim_mults=(1, 2, 4),
            text_embed_dim=None,
            num_resnet_blocks=1,
            lowres_cond=True,
            cond_on_text=False,
            attn_pool_text=False,
            layer_attns=False,
            layer_cross_attns=False,
            attend_at_middle=False,
            use_global_context_attn=False,
            temporal_attn=False,
            mid_cross_attn=False,
        )
        return net, (lambda: fn(x, lowres_cond=low))
    if kind == "BASE":
        net, fn = make_diffusers_unet3d(
            block_out_channels=(64, 128, 256),
            layers_per_block=2,
            cross_attention_dim=D,
            in_channels=3,
            attention_head_dim=64,
            attn_levels=(False, True, True),
        )
        return net, (lambda: fn(x, text_embeds=text))
    net, fn = make_diffusers_unet3d(
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        cross_attention_dim=D,
        in_channels=6,
        attention_head_dim=32,
        attn_levels=False,
    )
    return net, (lambda: fn(x, lowres_cond=low))


# --- measurements -------------------------------------------------------------------------------


def time_forward(call) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        call()
        return time.perf_counter() - t0


def time_train_step(net, call, opt) -> float:
    t0 = time.perf_counter()
    out = call()
    out.float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def child_memory(name: str) -> dict:
    net, call = build(name)
    net.eval()
    with torch.inference_mode():
        call()  # one-off allocations (weights of lazily built buffers, thread pools)
    gc.collect()
    base = rss_mb()
    reset_peak()
    with torch.inference_mode():
        call()
    fwd_peak = peak_mb() - base
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    time_train_step(net, call, opt)  # creates the optimizer state
    gc.collect()
    base_train = rss_mb()
    reset_peak()
    time_train_step(net, call, opt)
    train_peak = peak_mb() - base_train
    return {"forward_peak_mb": round(fwd_peak, 1), "train_peak_mb": round(train_peak, 1)}


def memory(name: str) -> dict:
    r = subprocess.run(
        [sys.executable, __file__, "--memory-child", name],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def flops(call) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        call()
    return fc.get_total_flops() / 1e9


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--memory-child")
    ap.add_argument("--report-only", action="store_true", help="rewrite the markdown from the saved JSON")
    ap.add_argument("--memory-only", action="store_true", help="re-measure peak memory into the saved JSON")
    a = ap.parse_args()
    if a.report_only or a.memory_only:
        res = json.loads((Path(a.out) / "unet_speed.json").read_text())
        if a.memory_only:
            for c in res["configs"].values():
                for n, v in c["models"].items():
                    v.update(memory(n))
                    print(n, {k: v[k] for k in ("forward_peak_mb", "train_peak_mb")}, flush=True)
            (Path(a.out) / "unet_speed.json").write_text(json.dumps(res, indent=1))
        (Path(a.out) / "unet_speed.md").write_text(report(res))
        print(report(res))
        return 0
    torch.set_num_threads(a.threads)
    if a.memory_child:
        print(json.dumps(child_memory(a.memory_child)))
        return 0

    results: dict = {"torch": torch.__version__, "threads": a.threads, "batch": B, "rounds": a.rounds, "configs": {}}
    for kind in ("BASE", "SSR"):
        baselines = [f"{kind}:imagen", f"{kind}:diffusers"]
        params = {}
        for bl in baselines:
            net, _ = build(bl)
            params[bl] = count(net)
            del net
        make = ours_base if kind == "BASE" else ours_ssr
        ours = {bl: f"{kind}:ours:{matched_width(make, params[bl])}" for bl in baselines}
        names = baselines + sorted(set(ours.values()))
        built = {n: build(n) for n in names}
        info = {n: {"params": count(built[n][0]), "gflop_per_forward": round(flops(built[n][1]), 1)} for n in names}
        fwd = {n: [] for n in names}
        train = {n: [] for n in names}
        opts = {n: torch.optim.AdamW(built[n][0].parameters(), lr=1e-5) for n in names}
        for n in names:  # warm-up
            built[n][0].eval()
            time_forward(built[n][1])
        for r in range(a.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                built[n][0].eval()
                fwd[n].append(time_forward(built[n][1]))
            for n in order:
                built[n][0].train()
                train[n].append(time_train_step(*built[n], opts[n]))
            print(
                f"{kind} round {r + 1}/{a.rounds}: " + ", ".join(f"{n} {fwd[n][-1]:.2f}s/{train[n][-1]:.2f}s" for n in order),
                flush=True,
            )
        del built, opts
        gc.collect()
        for n in names:
            info[n].update(
                forward_s=round(statistics.median(fwd[n]), 3), train_step_s=round(statistics.median(train[n]), 3), **memory(n)
            )
        # frames: 8 / 16 / 32
        scaling = {}
        for n in names:
            ts = []
            for f in (8, 16, 32):
                net, call = build(n, frames=f)
                net.eval()
                time_forward(call)
                ts.append(round(min(time_forward(call) for _ in range(2)), 3))
                del net, call
            scaling[n] = ts
            print(f"{n} frames 8/16/32: {ts}", flush=True)
        results["configs"][kind] = {"models": info, "matched": ours, "frames_8_16_32_forward_s": scaling}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unet_speed.json").write_text(json.dumps(results, indent=1))
    md = report(results)
    (out / "unet_speed.md").write_text(md)
    print(md)
    return 0


def _label(n: str) -> str:
    p = n.split(":")
    names = {"imagen": "imagen-pytorch 2.1.0 Unet3D", "diffusers": "diffusers 0.42.1 UNet3DConditionModel"}
    return names[p[1]] if p[1] in names else f"ours (width {p[2]})"


def report(r: dict) -> str:
    lines = [
        f"CPU, {r['threads']} threads, torch {r['torch']}, batch {r['batch']}, median of {r['rounds']} interleaved rounds.",
        "",
    ]
    for kind, c in r["configs"].items():
        m = c["models"]
        lines += [
            f"### {kind}",
            "",
            "| model | params | GFLOP/forward | forward s | train step s | peak MiB fwd / train |",
            "|---|---|---|---|---|---|",
        ]
        for n, v in m.items():
            lines.append(
                f"| {_label(n)} | {v['params'] / 1e6:.2f} M | {v['gflop_per_forward']} | {v['forward_s']:.2f} | {v['train_step_s']:.2f} | "
                f"{v['forward_peak_mb']:.0f} / {v['train_peak_mb']:.0f} |"
            )
        lines += [
            "",
            "| ours vs (matched params) | forward time ratio | train step ratio | peak memory ratio fwd / train |",
            "|---|---|---|---|",
        ]
        for bl, ours in c["matched"].items():
            o, b = m[ours], m[bl]
            lines.append(
                f"| {_label(bl)} | **{o['forward_s'] / b['forward_s']:.2f}x** | {o['train_step_s'] / b['train_step_s']:.2f}x | "
                f"{o['forward_peak_mb'] / max(b['forward_peak_mb'], 1):.2f} / {o['train_peak_mb'] / max(b['train_peak_mb'], 1):.2f} |"
            )
        lines += ["", "| model | forward s at 8 / 16 / 32 frames | 32 vs 16 frames |", "|---|---|---|"]
        for n, ts in c["frames_8_16_32_forward_s"].items():
            lines.append(f"| {_label(n)} | {ts[0]:.2f} / {ts[1]:.2f} / {ts[2]:.2f} | {ts[2] / ts[1]:.2f}x |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
