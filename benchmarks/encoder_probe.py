"""How much of a caption's meaning the frozen text encoder carries to wording it never saw in training.

    PYTHONPATH=. python benchmarks/encoder_probe.py [--per-combo 24] [--n 512]

The base can only follow a held-out phrasing as far as the frozen encoder's embedding of it resembles
the training phrasings' embeddings of the same meaning. This measures that ceiling without any video
model: probes read each attribute (colour, shape, direction, speed) from the caption's embedding: a
multinomial logistic regression and a one-hidden-layer MLP on the pooled vector (the mean of the
token embeddings, which every stage is conditioned on), and an attention probe (one learned query
over the token embeddings, what a stage's cross-attention can read), all trained on training phrasings only,
then tested on

* fresh training phrasings (recall),
* the evaluation's ``held_out_phrasing`` split (a held-out template, each slot a held-out synonym
  with probability 1/2; drawn exactly as ``cascade.evaluate`` draws its prompts, with more of them),
* each held-out synonym alone, inside the training templates (every other slot canonical),
* the held-out templates with training words only.

Writes benchmarks/results/encoder_probe.{json,md}. ``--encoder FOLDER`` probes another frozen encoder (a
Hugging Face model folder, e.g. all-mpnet-base-v2) instead of the shipped MiniLM; ``--name`` names its files.

``--richer-phrasebook`` asks whether more training synonyms would lift that ceiling: every attribute value
gets five to seven more training words (:data:`RICHER`, none sharing a stem with a held-out word; the
held-out words and templates are unchanged) before the probes are trained and the prompts drawn. Writes
``encoder_probe_richer.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade.data.captions import HELD_OUT_TEMPLATES, HELD_OUT_WORDS, PHRASEBOOK, TEMPLATES, phrase, words  # noqa: E402
from cascade.data.shapes import COLOURS, DIRECTIONS, SHAPES, SPEEDS, Attributes, all_attributes  # noqa: E402
from cascade.evaluate import _prompts, captions_for  # noqa: E402
from cascade.text import load_text_encoder  # noqa: E402

# more training synonyms for --richer-phrasebook, inserted before each value's held-out word
RICHER: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {
        "red": ("ruby", "rose red", "tomato red", "brick red", "vermilion", "blood red", "cardinal red"),
        "green": ("grass green", "jade", "olive green", "forest green", "mint green", "kelly green", "pine green"),
        "blue": ("navy", "sky blue", "sapphire", "cerulean", "ocean blue", "denim blue", "baby blue"),
        "yellow": ("canary yellow", "sunflower yellow", "mustard", "banana yellow", "saffron", "butter yellow", "gold"),
        "white": ("milky white", "pearl", "chalk white", "cream", "alabaster", "off-white", "silvery white"),
    },
    "shape": {
        "circle": ("round shape", "dot", "sphere", "orb", "coin", "round blob"),
        "square": ("square block", "tile", "four-sided shape", "brick", "crate", "square box"),
        "triangle": ("three-cornered shape", "arrowhead", "delta", "cone shape", "spike", "triangular tile"),
    },
    "direction": {
        "left": ("leftwards", "toward the left", "from right to left", "to the left side", "in the leftward direction"),
        "right": ("rightwards", "toward the right", "from left to right", "to the right side", "in the rightward direction"),
        "up": ("skyward", "towards the ceiling", "from bottom to top", "higher and higher", "in the upward direction"),
        "down": ("toward the floor", "from top to bottom", "lower and lower", "earthward", "in the downward direction"),
    },
    "speed": {
        "slowly": ("unhurriedly", "calmly", "lazily", "sluggishly", "gradually", "at a crawl", "slow-moving"),
        "quickly": ("speedily", "briskly", "hastily", "at high speed", "in a hurry", "hurriedly", "zooming"),
    },
}
ARCHS = ("linear", "mlp", "attention")  # on the pooled vector; the last attends over the tokens
KINDS = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS), "speed": list(SPEEDS)}


def fill(template: str, a: Attributes, pick) -> str:
    return template.format(**{k[0] if k != "speed" else "v": pick(k, getattr(a, k)) for k in KINDS})


def features(enc, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled vectors ``(N, D)``, token embeddings ``(N, L, D)`` and their mask ``(N, L)``."""
    e = enc.encode(captions)  # padded to the longest caption
    return e.pooled, e.tokens, e.mask


class AttentionProbe(nn.Module):
    """What a stage's cross-attention can read: one learned query attends over the caption's tokens."""

    def __init__(self, d: int, classes: int):
        super().__init__()
        self.key = nn.Linear(d, 64)
        self.query = nn.Parameter(torch.randn(64) * 0.1)
        self.out = nn.Linear(d, classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        att = (self.key(tokens) @ self.query).masked_fill(~mask, -1e9).softmax(-1)
        return self.out((att[..., None] * tokens).sum(1))


def labels(attrs: list[Attributes], kind: str) -> torch.Tensor:
    return torch.tensor([KINDS[kind].index(getattr(a, kind)) for a in attrs])


def fit(feats: tuple, y: torch.Tensor, classes: int, arch: str, seed: int):
    """A probe trained on ``feats`` (normalised pooled, tokens, mask); returns ``feats -> logits``."""
    torch.manual_seed(seed)
    d = feats[0].shape[1]
    if arch == "attention":
        net = AttentionProbe(d, classes)
        call = lambda f: net(f[1], f[2])  # noqa: E731
    else:
        net = nn.Linear(d, classes) if arch == "linear" else nn.Sequential(nn.Linear(d, 256), nn.GELU(), nn.Linear(256, classes))
        call = lambda f: net(f[0])  # noqa: E731
    opt = torch.optim.Adam(net.parameters(), lr=1e-2 if arch == "linear" else 3e-3, weight_decay=1e-3)
    for _ in range(400):
        opt.zero_grad()
        nn.functional.cross_entropy(call(feats), y).backward()
        opt.step()
    net.eval()
    return call


def enrich_phrasebook() -> None:
    """Insert :data:`RICHER`'s synonyms into the training phrasebook (in place, before each value's
    held-out word, so that the held-out words stay what they were)."""
    held = {w for table in HELD_OUT_WORDS.values() for ws in table.values() for w in ws}
    for kind, table in RICHER.items():
        for value, extra in table.items():
            syns = PHRASEBOOK[kind][value]
            assert not set(extra) & (held | set(syns)), (kind, value)
            PHRASEBOOK[kind][value] = syns[:-1] + extra + syns[-1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-combo", type=int, default=24, help="training phrasings per training combination")
    ap.add_argument("--n", type=int, default=512, help="prompts per phrasing split (the evaluation uses 64)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--richer-phrasebook", action="store_true", help="train the probes with RICHER's extra synonyms too")
    ap.add_argument(
        "--encoder",
        default="default",
        help="the frozen encoder to probe: 'default' (MiniLM) or a Hugging Face model folder (see load_text_encoder)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="output file stem (default encoder_probe[_richer])")
    a = ap.parse_args()
    if a.richer_phrasebook:
        enrich_phrasebook()
    torch.set_num_threads(a.threads)
    enc = load_text_encoder(a.encoder)

    rng = np.random.default_rng(0)
    train_attrs = [x for x in all_attributes("train") for _ in range(a.per_combo)]
    pooled, toks, mask = features(enc, [phrase(x, rng, "train") for x in train_attrs])
    mu, sd = pooled.mean(0), pooled.std(0) + 1e-6
    norm = lambda f: ((f[0] - mu) / sd, f[1], f[2])  # noqa: E731
    x_train = norm((pooled, toks, mask))

    # test sets: name -> (attrs, captions)
    tests: dict[str, tuple[list[Attributes], list[str]]] = {}
    for split in ("train_phrasing", "held_out_phrasing"):
        attrs = _prompts(split, a.n, 1234)
        tests[split] = (attrs, captions_for(attrs, split, 1234))
    pool = all_attributes("train")
    r = np.random.default_rng(5)
    for kind, values in KINDS.items():
        for value in values:
            held = HELD_OUT_WORDS[kind][value][0]
            attrs = [x for x in pool if getattr(x, kind) == value]
            caps = [
                fill(
                    TEMPLATES[int(r.integers(len(TEMPLATES)))],
                    x,
                    lambda k, v, held=held, kind=kind: held if k == kind else words(k, v)[0],
                )
                for x in attrs
            ]
            tests[f"word:{kind}:{held}->{value}"] = (attrs, caps)
    attrs = [pool[int(r.integers(len(pool)))] for _ in range(a.n)]
    caps = [
        fill(
            HELD_OUT_TEMPLATES[int(r.integers(len(HELD_OUT_TEMPLATES)))],
            x,
            lambda k, v: (w := words(k, v))[int(r.integers(len(w)))],
        )
        for x in attrs
    ]
    tests["held_out_templates_training_words"] = (attrs, caps)
    feats = {name: norm(features(enc, caps)) for name, (_, caps) in tests.items()}

    result: dict = {"per_combo": a.per_combo, "n": a.n, "encoder": enc.encoder_id, "probes": {}}
    for arch in ARCHS:
        nets = {k: fit(x_train, labels(train_attrs, k), len(v), arch, seed=0) for k, v in KINDS.items()}
        res = {}
        for name, (attrs, _) in tests.items():
            with torch.no_grad():
                right = {k: (nets[k](feats[name]).argmax(1) == labels(attrs, k)) for k in KINDS}
            row = {k: float(v.float().mean()) for k, v in right.items()}
            row["all"] = float(torch.stack(list(right.values())).all(0).float().mean())
            row["n"] = len(attrs)
            if name.startswith("word:"):
                kind = name.split(":")[1]
                pred = nets[kind](feats[name]).argmax(1)
                row["read_as"] = {
                    KINDS[kind][i]: int(c) for i, c in enumerate(np.bincount(pred.numpy(), minlength=len(KINDS[kind])))
                }
            res[name] = row
        result["probes"][arch] = res

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result["richer_phrasebook"] = a.richer_phrasebook
    name = a.name or ("encoder_probe_richer" if a.richer_phrasebook else "encoder_probe")
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{name}.md").write_text(report(result))
    print(report(result))


def report(r: dict) -> str:
    pct = lambda v: f"{100 * v:.0f} %"  # noqa: E731
    lines = [
        f"Probes on the frozen encoder's caption embedding ({r['encoder']}), trained on "
        f"{r['per_combo']} training phrasings per training combination"
        + (
            " from the richer phrasebook (`--richer-phrasebook`: RICHER's synonyms added to training)"
            if r.get("richer_phrasebook")
            else ""
        )
        + "; accuracy (colour / shape / direction / speed, all four).",
        "",
        "| test captions | linear probe | MLP probe | attention probe (tokens) |",
        "|---|---|---|---|",
    ]
    for name in r["probes"]["linear"]:
        if name.startswith("word:"):
            continue
        cells = []
        for arch in ARCHS:
            row = r["probes"][arch][name]
            cells.append(f"{' / '.join(pct(row[k]) for k in KINDS)}, **{pct(row['all'])}**")
        lines.append(f"| {name} (n={r['probes']['linear'][name]['n']}) | {' | '.join(cells)} |")
    lines += [
        "",
        "Each held-out synonym alone in the training templates (other slots canonical): read right, and what it is read as.",
        "",
    ]
    lines += ["| held-out word -> meaning | linear probe | MLP probe | attention probe |", "|---|---|---|---|"]
    for name in r["probes"]["linear"]:
        if not name.startswith("word:"):
            continue
        kind, rest = name.split(":")[1:]
        cells = []
        for arch in ARCHS:
            row = r["probes"][arch][name]
            read = ", ".join(f"{k} {v}" for k, v in row["read_as"].items() if v)
            cells.append(f"{pct(row[kind])} ({read})")
        lines.append(f"| {rest} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
