"""A finished build as a dataset: where its shards are and how to read them.

A region build lives at `<output>/<region>/` (local path or gs://) with `manifest.json` and
`shards/*.parquet`. Only the shards the manifest lists are the dataset: a shard without a
completion marker (a killed attempt) is never read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pyarrow as pa

from corebuild.errors import CorebuildError
from corebuild.shards.storage import Storage, open_parquet, open_storage


@dataclass(frozen=True)
class BuildRef:
    """One region build: its storage (rooted at the region directory) and its manifest."""

    storage: Storage
    manifest: dict[str, Any]

    @property
    def region_id(self) -> str:
        return self.manifest["region_id"]

    @property
    def continent(self) -> Optional[str]:
        return (self.manifest.get("region") or {}).get("continent")

    @property
    def url(self) -> str:
        return self.storage.url

    def shard_names(self) -> list[str]:
        """Object names (relative to the region directory) of the shards that make the dataset."""
        return [f"shards/{s['path']}" for s in self.manifest.get("shards", [])]

    def shard_urls(self) -> list[str]:
        return [self.storage.join(n) for n in self.shard_names()]

    def read_table(self, name: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
        # Single-threaded: threaded reads can abort the process at exit (pyarrow 24-25 here).
        return open_parquet(self.storage, name).read(columns=list(columns) if columns else None, use_threads=False)


def _manifest(storage: Storage, rel: str) -> dict[str, Any]:
    raw = storage.read(rel)
    if raw is None:
        raise CorebuildError(f"{storage.join(rel)}: no manifest; is this a finished region build?")
    return json.loads(raw)


def listed_shards(storage: Storage, region_prefix: str) -> list[str]:
    """Names of the shards `<region_prefix>/manifest.json` lists (storage rooted above the region)."""
    return [f"{region_prefix}/shards/{s['path']}" for s in _manifest(storage, f"{region_prefix}/manifest.json").get("shards", [])]


def open_build(url: str) -> BuildRef:
    storage = open_storage(url)
    return BuildRef(storage, _manifest(storage, "manifest.json"))


def find_builds(url: str) -> list[BuildRef]:
    """`url` is one region build (has manifest.json) or an output root holding several."""
    root = open_storage(url)
    if root.exists("manifest.json"):
        return [open_build(url)]
    regions = sorted({n.split("/", 1)[0] for n in root.list("") if n.endswith("/manifest.json") and n.count("/") == 1})
    if not regions:
        raise CorebuildError(f"{url}: no region builds here (no manifest.json, nor <region>/manifest.json)")
    return [open_build(root.join(r)) for r in regions]
