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
import pyarrow.parquet as pq

from .errors import CorebuildError
from .storage import Storage, open_storage


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
        return read_parquet_bytes(self.storage.read(name), self.storage.join(name), columns)


def read_parquet_bytes(data: Optional[bytes], where: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
    if data is None:
        raise CorebuildError(f"{where}: shard listed in manifest.json is missing")
    # Single-threaded: threaded reads from memory buffers can abort the process at exit (pyarrow 24-25 here).
    return pq.read_table(pa.BufferReader(data), columns=list(columns) if columns else None, use_threads=False)


def listed_shards(storage: Storage, region_prefix: str) -> list[str]:
    """Names of the shards `<region_prefix>/manifest.json` lists (storage rooted above the region)."""
    raw = storage.read(f"{region_prefix}/manifest.json")
    if raw is None:
        raise CorebuildError(f"{storage.join(region_prefix + '/manifest.json')}: no manifest; is this a finished region build?")
    return [f"{region_prefix}/shards/{s['path']}" for s in json.loads(raw).get("shards", [])]


def open_build(url: str) -> BuildRef:
    storage = open_storage(url)
    raw = storage.read("manifest.json")
    if raw is None:
        raise CorebuildError(f"{storage.join('manifest.json')}: no manifest; is this a finished region build?")
    return BuildRef(storage, json.loads(raw))


def find_builds(url: str) -> list[BuildRef]:
    """`url` is one region build (has manifest.json) or an output root holding several."""
    root = open_storage(url)
    if root.exists("manifest.json"):
        return [open_build(url)]
    regions = sorted({n.split("/", 1)[0] for n in root.list("") if n.endswith("/manifest.json") and n.count("/") == 1})
    if not regions:
        raise CorebuildError(f"{url}: no region builds here (no manifest.json, nor <region>/manifest.json)")
    return [open_build(root.join(r)) for r in regions]
