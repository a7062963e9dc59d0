"""manifest.json: what a build produced, counted from the shards themselves."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def count_shards(shard_paths: list[Path]) -> dict[str, Any]:
    """Counts by status and failure reason, read from the shards (not from what we hoped)."""
    shards, status, reasons, per_region = [], Counter(), Counter(), {}
    ids: Counter = Counter()
    for path in sorted(shard_paths):
        table = pq.read_table(path, columns=["sample_id", "region_id", "status", "failure_reason"])
        cols = table.to_pydict()
        for sid, rid, st, why in zip(cols["sample_id"], cols["region_id"], cols["status"], cols["failure_reason"]):
            ids[sid] += 1
            status[st] += 1
            r = per_region.setdefault(rid, {"kept": 0, "failed": 0, "failed_by_reason": Counter()})
            r[st] = r.get(st, 0) + 1
            if st == "failed":
                reasons[why or "unknown"] += 1
                r["failed_by_reason"][why or "unknown"] += 1
        shards.append({"path": path.name, "rows": table.num_rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    for r in per_region.values():
        r["failed_by_reason"] = dict(sorted(r["failed_by_reason"].items()))
    return {
        "rows": sum(s["rows"] for s in shards),
        "kept": status.get("kept", 0),
        "failed": status.get("failed", 0),
        "other_status": {k: v for k, v in status.items() if k not in ("kept", "failed")},
        "failed_by_reason": dict(sorted(reasons.items())),
        "duplicate_sample_ids": sum(1 for v in ids.values() if v > 1),
        "per_region": per_region,
        "shards": shards,
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a manifest
