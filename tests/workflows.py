"""Node schemas, UI-format workflow validation and UI -> API conversion (the server has none).

Used by the schema snapshot test, the example-workflow tests, the integration test and
``tests/make_example_workflows.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
DYNAMIC_COMBOS = {
    ("ImagenVideoModelLoader", "model_name"),
    ("ImagenVideoTextEncoderLoader", "encoder"),
    ("CLIPLoader", "clip_name"),
    ("LoadVideo", "file"),
}


def _normalise(node_id: str, section: str, name: str, spec) -> dict:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    entry = {"name": name, "section": section}
    if isinstance(kind, list) or kind == "COMBO":
        entry["type"] = "COMBO"
        options = kind if isinstance(kind, list) else opts.get("options", [])
        entry["options"] = None if (node_id, name) in DYNAMIC_COMBOS else list(options)
    else:
        entry["type"] = kind
    for key in ("default", "min", "max", "step", "control_after_generate", "multiline"):
        if key in opts:
            entry[key] = opts[key]
    if "default" not in entry and entry["type"] == "COMBO" and entry.get("options"):
        entry["default"] = entry["options"][0]
    return entry


def pack_schema(pack) -> dict:
    """The public contract of every node of the pack: id, inputs (name, type, order, defaults), outputs."""
    out = {}
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        it = cls.INPUT_TYPES()
        inputs = [
            _normalise(node_id, sec, name, spec) for sec in ("required", "optional") for name, spec in it.get(sec, {}).items()
        ]
        out[node_id] = {
            "inputs": inputs,
            "outputs": list(cls.RETURN_TYPES),
            "output_names": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "category": cls.CATEGORY,
            "deprecated": bool(getattr(cls, "DEPRECATED", False)),
        }
    return out


def core_schema() -> dict:
    raw = json.loads((DATA / "core_nodes_0.3.64.json").read_text())
    out = {}
    for node_id, info in raw.items():
        inputs = []
        for sec in ("required", "optional"):
            for name in info["input_order"].get(sec, []):
                inputs.append(_normalise(node_id, sec, name, info["input"][sec][name]))
        out[node_id] = {"inputs": inputs, "outputs": info["output"], "output_names": info["output_name"]}
    return out


def is_widget(entry: dict) -> bool:
    return entry["type"] in WIDGET_TYPES


def widget_values_layout(entry_list: list[dict]) -> list[tuple[str, bool]]:
    """(name, is_control_value) for each position of ``widgets_values``: an INT with
    control_after_generate takes an extra position right after its value."""
    layout = []
    for e in entry_list:
        if is_widget(e):
            layout.append((e["name"], False))
            if e.get("control_after_generate"):
                layout.append((e["name"], True))
    return layout


def validate_workflow(wf: dict, schemas: dict) -> list[str]:
    """Problems with a UI-format workflow: unknown node types, widget values that do not fit
    the schema, links between mismatched types."""
    problems = []
    nodes = {n["id"]: n for n in wf["nodes"]}
    for n in wf["nodes"]:
        sch = schemas.get(n["type"])
        if sch is None:
            problems.append(f"node {n['id']}: unknown type {n['type']}")
            continue
        layout = widget_values_layout(sch["inputs"])
        vals = n.get("widgets_values", [])
        if len(vals) != len(layout):
            problems.append(
                f"node {n['id']} {n['type']}: {len(vals)} widget values, schema has {len(layout)} ({[x for x, _ in layout]})"
            )
            continue
        by_name = {e["name"]: e for e in sch["inputs"]}
        for (name, is_ctrl), v in zip(layout, vals):
            e = by_name[name]
            if is_ctrl:
                if v not in ("fixed", "increment", "decrement", "randomize"):
                    problems.append(f"node {n['id']}: control value {v!r} for {name}")
                continue
            problems += [f"node {n['id']} {n['type']}.{name}: {p}" for p in _check_value(e, v)]
    for link in wf["links"]:
        lid, src, src_slot, dst, dst_slot, typ = link
        s, d = nodes.get(src), nodes.get(dst)
        if s is None or d is None:
            problems.append(f"link {lid}: missing node")
            continue
        out_type = schemas[s["type"]]["outputs"][src_slot]
        dst_input = d["inputs"][dst_slot]
        in_entry = {e["name"]: e for e in schemas[d["type"]]["inputs"]}.get(dst_input["name"])
        if in_entry is None:
            problems.append(f"link {lid}: {d['type']} has no input {dst_input['name']}")
        elif out_type != in_entry["type"] and out_type != "*":
            problems.append(f"link {lid}: {s['type']} output {out_type} -> {d['type']}.{dst_input['name']} ({in_entry['type']})")
    return problems


def _check_value(e: dict, v) -> list[str]:
    t = e["type"]
    if t == "COMBO":
        return [] if e.get("options") is None or v in e["options"] else [f"{v!r} not in {e['options']}"]
    if t == "BOOLEAN":
        return [] if isinstance(v, bool) else [f"{v!r} is not a boolean"]
    if t in ("INT", "FLOAT"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (t == "INT" and not float(v).is_integer()):
            return [f"{v!r} is not a {t}"]
        lo, hi = e.get("min"), e.get("max")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return [f"{v} outside [{lo}, {hi}]"]
        return []
    if t == "STRING":
        return [] if isinstance(v, str) else [f"{v!r} is not a string"]
    return []


def ui_to_api(wf: dict, schemas: dict, overrides: dict | None = None) -> dict:
    """Convert a UI-format workflow to the API format POST /prompt takes. ``overrides``:
    ``{(node_type, input_name): value}`` applied to widget values (e.g. model file names)."""
    overrides = overrides or {}
    links = {link[0]: link for link in wf["links"]}
    prompt = {}
    for n in wf["nodes"]:
        if n.get("mode", 0) in (2, 4) or n["type"] in FRONTEND_ONLY:  # muted / bypassed / virtual nodes
            continue
        sch = schemas[n["type"]]
        inputs = {}
        vals = iter(n.get("widgets_values", []))
        defaults = {e["name"]: e.get("default") for e in sch["inputs"]}
        missing = object()
        for name, is_ctrl in widget_values_layout(sch["inputs"]):
            v = next(vals, missing)
            if v is missing:  # a workflow saved before this (optional, trailing) widget existed: its default, as the editor does
                v = defaults.get(name)
            if not is_ctrl:
                inputs[name] = overrides.get((n["type"], name), v)
        for inp in n.get("inputs", []):
            if inp.get("link") is not None:
                _, src, src_slot, *_ = links[inp["link"]]
                inputs[inp["name"]] = [str(src), src_slot]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt
