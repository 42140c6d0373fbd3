"""Regenerate tests/data/node_schema.json after an intentional, backward-compatible node change
(new nodes, new inputs appended at the end with defaults). test_nodes.py refuses incompatible ones."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from packimport import load_pack  # noqa: E402
from workflows import DATA, pack_schema  # noqa: E402

if __name__ == "__main__":
    (DATA / "node_schema.json").write_text(json.dumps(pack_schema(load_pack()), indent=1, sort_keys=True) + "\n")
    print("wrote", DATA / "node_schema.json")
