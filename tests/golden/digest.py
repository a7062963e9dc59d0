"""A build's rows and counts as digests, for the golden test: every column but build identity
and timings, images by their sha256. `python -m tests.golden.digest BUILD_DIR > FILE` records one;
`python -m tests.golden.digest BUILD_DIR FILE` compares."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

IDENTITY = ("build_id", "config_hash", "code_version", "stage_seconds")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def digest(build_dir: str | Path) -> dict[str, Any]:
    root = Path(build_dir)
    manifest = json.loads((root / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        rows += pq.read_table(root / "shards" / shard["path"]).to_pylist()
    rows.sort(key=lambda r: r["sample_id"])
    columns = {}
    for name in sorted(rows[0]) if rows else []:
        if name not in IDENTITY:
            blob = json.dumps([_plain(r[name]) for r in rows], sort_keys=True).encode()
            columns[name] = hashlib.sha256(blob).hexdigest()[:20]
    return {"counts": manifest["counts"], "rows": len(rows), "columns": columns}


def differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """What differs, by name: the counts, the row count, each column that changed, appeared or went."""
    out = [f"counts: {want['counts']} != {got['counts']}"] if want["counts"] != got["counts"] else []
    if want["rows"] != got["rows"]:
        out.append(f"rows: {want['rows']} != {got['rows']}")
    for name in sorted(set(want["columns"]) | set(got["columns"])):
        if want["columns"].get(name) != got["columns"].get(name):
            out.append(f"column {name}: {want['columns'].get(name, 'absent')} != {got['columns'].get(name, 'absent')}")
    return out


if __name__ == "__main__":  # digest BUILD_DIR [GOLDEN.json]: print it, or compare with a recorded one
    got = digest(sys.argv[1])
    if len(sys.argv) > 2:
        diff = differences(json.loads(Path(sys.argv[2]).read_text()), got)
        print("\n".join(diff) or "identical")
        sys.exit(1 if diff else 0)
    json.dump(got, sys.stdout, indent=1, sort_keys=True)
    print()
