"""manifest.json: what a build produced, counted from the shards themselves."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any, Optional

from corebuild.shards.storage import open_parquet
from corebuild.errors import CorebuildError
from corebuild.failures import failure_class


COUNT_COLUMNS = ["sample_id", "region_id", "status", "failure_reason"]
COVERAGE_COLUMNS = ["ocr_languages_read", "ocr_languages_unread"]  # absent in shards written before them
LICENSE_COLUMNS = {"street": "street_license", "aerial": "aerial_license"}  # likewise
UNRECORDED = "unrecorded"  # a kept row from a shard written before its licence was recorded


def coverage_of(read: Optional[list[str]], unread: Optional[list[str]]) -> str:
    """A kept row's OCR coverage: full (every language the region needs was read), partial, none."""
    if read is None and unread is None:
        return "unrecorded"
    return "none" if not read else "partial" if unread else "full"


def count_shards(storage, names: list[str], written: Optional[dict[str, dict[str, Any]]] = None) -> dict[str, Any]:
    """Counts by status and failure reason, read from the stored shards (not from what we hoped).

    Sizes and sha256 come from `written` (what the writer stored, by name) when given, else
    from the stored bytes."""
    shards, status, reasons, per_region = [], Counter(), Counter(), {}
    coverage, unread_rows = Counter(), Counter()
    licenses: dict[str, Counter] = {part: Counter() for part in LICENSE_COLUMNS}
    ids: Counter = Counter()
    for name in sorted(names):
        base = name.rsplit("/", 1)[-1]
        known = (written or {}).get(base)
        try:
            # Only the four small columns (ranged reads on gs://: a build is not downloaded to be counted).
            pf = open_parquet(storage, name)
            have = set(pf.schema_arrow.names)
            table = pf.read(columns=COUNT_COLUMNS + [c for c in [*COVERAGE_COLUMNS, *LICENSE_COLUMNS.values()] if c in have], use_threads=False)
        except CorebuildError:
            raise FileNotFoundError(storage.join(name)) from None
        if known is not None:
            size, digest = known["bytes"], known["sha256"]
        else:  # no record of what was written: hash the stored bytes
            data = storage.read(name) or b""
            size, digest = len(data), hashlib.sha256(data).hexdigest()
        cols = table.to_pydict()
        nones = [None] * table.num_rows
        license_cols = [cols.get(c, nones) for c in LICENSE_COLUMNS.values()]
        for sid, rid, st, why, read, unread, *lic in zip(cols["sample_id"], cols["region_id"], cols["status"], cols["failure_reason"],
                                                         cols.get("ocr_languages_read", nones), cols.get("ocr_languages_unread", nones), *license_cols):
            ids[sid] += 1
            status[st] += 1
            if st == "kept":
                coverage[coverage_of(read, unread)] += 1
                unread_rows.update(unread or ())
                for part, license_id in zip(LICENSE_COLUMNS, lic):
                    licenses[part][license_id or UNRECORDED] += 1
            r = per_region.setdefault(rid, {"kept": 0, "failed": 0, "failed_by_reason": Counter()})
            r[st] = r.get(st, 0) + 1
            if st == "failed":
                reasons[why or "unknown"] += 1
                r["failed_by_reason"][why or "unknown"] += 1
        if known is not None and known.get("rows") not in (None, table.num_rows):
            raise ValueError(f"{storage.join(name)} holds {table.num_rows} rows; its marker says {known['rows']}")
        shards.append({"path": base, "rows": table.num_rows, "bytes": size, "sha256": digest})
    def by_class(by_reason: dict[str, int]) -> dict[str, int]:
        out: Counter = Counter()
        for why, n in by_reason.items():
            out[failure_class(why)] += n
        return dict(sorted(out.items()))

    for r in per_region.values():
        r["failed_by_reason"] = dict(sorted(r["failed_by_reason"].items()))
        r["failed_by_class"] = by_class(r["failed_by_reason"])
    return {
        "rows": sum(s["rows"] for s in shards),
        "kept": status.get("kept", 0),
        "failed": status.get("failed", 0),
        "other_status": {k: v for k, v in status.items() if k not in ("kept", "failed")},
        "failed_by_reason": dict(sorted(reasons.items())),
        "failed_by_class": by_class(reasons),
        "duplicate_sample_ids": sum(1 for v in ids.values() if v > 1),
        # Kept rows by OCR coverage, and per language no reader read, the kept rows it concerns.
        "ocr_coverage": {**{k: coverage.get(k, 0) for k in ("full", "partial", "none")},
                         **({"unrecorded": coverage["unrecorded"]} if coverage["unrecorded"] else {}), "unread": dict(sorted(unread_rows.items()))},
        # Kept rows per licence id of their street and their aerial imagery (corebuild.licenses).
        "licenses": {part: dict(sorted(c.items())) for part, c in licenses.items()},
        "per_region": per_region,
        "shards": shards,
    }


def write_manifest(storage, name: str, manifest: dict[str, Any]) -> None:
    # Storage writes are atomic: a reader never sees half a manifest.
    storage.write(name, (json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8"))
