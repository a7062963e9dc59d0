"""Finished builds as a PyTorch `IterableDataset` (extra `data`: torch).

Work is split in (shard, row group) items read from the Parquet footers only. Item `p` of an
epoch's order goes to global worker `p % (world_size * num_workers)`, where the global worker
of DataLoader worker `w` on rank `r` is `r * num_workers + w`: every row is read by exactly one
worker across all ranks. Images stay encoded until a `Sample` key that needs them is read.

Example transform that `torch.utils.data.default_collate` can batch::

    import numpy as np, torch

    def to_tensors(s: Sample) -> dict:
        def chw(img):  # PIL -> uint8 CHW tensor (np.array: a writable copy, which torch wants)
            return torch.from_numpy(np.array(img.convert("RGB").resize((224, 224)))).permute(2, 0, 1)
        return {
            "aerial": chw(s["aerial"]),
            "street": torch.stack([chw(v.image) for v in s["street_views"]]),
            "text": s["description"], "lat": s["lat"], "lon": s["lon"], "sample_id": s["sample_id"],
        }

    ds = CorebuildDataset("gs://bucket/out", transform=to_tensors, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=32, num_workers=8)
    for epoch in range(10):
        ds.set_epoch(epoch)  # before creating the epoch's iterator (not with persistent_workers)
        for batch in loader: ...

Without a transform the dataset yields `Sample`s; batch them with `collate_fn=list`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch.distributed as dist
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from corebuild.dataset.reader import find_builds
from corebuild.shards.storage import open_parquet
from corebuild.errors import CorebuildError
from corebuild.shards.storage import open_storage

DEFAULT_COLUMNS = ("sample_id", "region_id", "lat", "lon", "description", "aerial_image", "aerial_format", "street_views")
Decode = Literal["pil", "bytes"]
Source = Union[str, "os.PathLike[str]"]


class View(NamedTuple):
    """One street view of a Sample: `image` is a PIL image, or encoded bytes with decode="bytes"."""

    heading: float
    fov: float
    pitch: float
    image: Any


def _decode(data: Optional[bytes], how: Decode) -> Any:
    if data is None or how == "bytes":
        return data
    img = Image.open(io.BytesIO(data))
    img.load()  # decode now: errors surface here, not inside the transform's later numpy call
    return img


class Sample(Mapping[str, Any]):
    """One row. Keys are the read columns plus `aerial` (and `map` when `map_image` was read):
    the decoded image. `street_views` reads as a list of `View`s with decoded images; the raw
    column values (encoded bytes, view dicts) stay in `sample.row`. Decoding happens on first
    access and is cached; pickling drops the cache."""

    __slots__ = ("row", "decode", "_cache")
    _IMAGES = {"aerial": "aerial_image", "map": "map_image"}

    def __init__(self, row: dict[str, Any], decode: Decode = "pil"):
        self.row, self.decode = row, decode
        self._cache: dict[str, Any] = {}

    def _derived(self) -> list[str]:
        return [k for k, col in self._IMAGES.items() if col in self.row and k not in self.row]

    def __getitem__(self, key: str) -> Any:
        if key in self._cache:
            return self._cache[key]
        if key == "street_views" and key in self.row:
            views = self.row[key]
            value: Any = None if views is None else [View(v["heading"], v["fov"], v["pitch"], _decode(v["image"], self.decode)) for v in views]
        elif key in self._IMAGES and key in self._derived():
            value = _decode(self.row[self._IMAGES[key]], self.decode)
        else:
            return self.row[key]  # plain column: no caching needed
        self._cache[key] = value
        return value

    def __contains__(self, key: object) -> bool:  # Mapping's default would decode via __getitem__
        return key in self.row or key in self._derived()

    def __iter__(self) -> Iterator[str]:
        yield from self.row
        yield from self._derived()

    def __len__(self) -> int:
        return len(self.row) + len(self._derived())

    def __getstate__(self) -> tuple[dict[str, Any], Decode]:
        return self.row, self.decode

    def __setstate__(self, state: tuple[dict[str, Any], Decode]) -> None:
        self.row, self.decode = state
        self._cache = {}

    def __repr__(self) -> str:
        return f"Sample({self.row.get('sample_id')!r}, keys={list(self)})"


@dataclass(frozen=True)
class WorkItem:
    shard: str  # path or gs:// URL
    row_group: int
    rows: int  # rows in the row group, before filters


def _open_shard(url: str) -> pq.ParquetFile:
    """Random access without downloading the shard: a memory map locally, ranged reads on gs://."""
    parent, _, name = url.rstrip("/").rpartition("/")
    return open_parquet(open_storage(parent), name)


def _with_files(items: Iterable[WorkItem]) -> Iterator[tuple[WorkItem, pq.ParquetFile]]:
    """Items with their open shard, reopened only when the shard changes (one file open at a time)."""
    pf: Optional[pq.ParquetFile] = None
    url = ""
    for item in items:
        if pf is None or item.shard != url:
            pf, url = _open_shard(item.shard), item.shard
        yield item, pf


def _shard_urls(sources: Union[Source, Iterable[Source]]) -> list[str]:
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    urls: list[str] = []
    for src in map(str, items):
        urls += [src] if src.endswith(".parquet") else [u for b in find_builds(src) for u in b.shard_urls()]
    if not urls:
        raise CorebuildError(f"no shards in {items}")
    return list(dict.fromkeys(urls))


def _dist_rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class CorebuildDataset(IterableDataset):
    """Rows of finished builds, sharded over DataLoader workers and distributed ranks.

    `sources`: region builds or output roots (local or gs://; only shards listed in
    manifest.json), or explicit `.parquet` shard paths. Yields `transform(Sample)`, or the
    `Sample` when there is no transform.

    Items are whole row groups, so workers and ranks get different numbers of samples when row
    groups differ in size (a shard's last one is short) or filters drop rows. Under DDP every
    rank must take the same number of steps: pass `equal_per_rank=True` to cap every worker
    on every rank at the smallest worker's count (drop_last-style; the dropped rows change each
    epoch with `shuffle`). That needs per-item counts after the filters, read once here (the
    status/sample_id columns only). Ranks must use the same `num_workers`.

    `shuffle` permutes item order and the rows within each item per epoch, from (seed, epoch),
    identically on every rank, so the partition stays disjoint. Call `set_epoch` before each
    epoch's iterator is created; persistent workers keep the epoch they were started with.
    """

    def __init__(
        self,
        sources: Union[Source, Iterable[Source]],
        *,
        columns: Optional[Iterable[str]] = DEFAULT_COLUMNS,
        kept_only: bool = True,
        sample_ids: Optional[Iterable[str]] = None,
        split: Optional[tuple[str, str]] = None,
        transform: Optional[Callable[[Sample], Any]] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        shuffle: bool = False,
        seed: int = 0,
        decode: Decode = "pil",
        equal_per_rank: bool = False,
    ):
        if decode not in ("pil", "bytes"):
            raise ValueError(f"decode must be 'pil' or 'bytes', not {decode!r}")
        if (rank is None) != (world_size is None):
            raise ValueError("pass both rank and world_size, or neither (then torch.distributed decides)")
        if world_size is not None and not 0 <= rank < world_size:  # type: ignore[operator]
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        ids = None if sample_ids is None else frozenset(sample_ids)
        if split is not None:
            from corebuild.dataset.splits import load_split  # optional module; only this convenience needs it

            in_split = frozenset(load_split(*split))
            ids = in_split if ids is None else ids & in_split
        self.sample_ids = ids
        self.kept_only, self.transform, self.decode = kept_only, transform, decode
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.equal_per_rank = equal_per_rank

        self.shards = _shard_urls(sources)
        self.items: list[WorkItem] = []
        wanted = None if columns is None else list(columns)
        names: list[str] = []
        for url in self.shards:
            meta = _open_shard(url).metadata  # footer only
            names = meta.schema.to_arrow_schema().names
            if wanted is not None and (missing := [c for c in wanted if c not in names]):
                raise CorebuildError(f"{url}: no column(s) {missing}")
            self.items += [WorkItem(url, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups) if meta.row_group(g).num_rows]
        self.columns: list[str] = names if wanted is None else wanted
        self._counts: Optional[list[int]] = None
        if equal_per_rank:
            self._item_counts()  # here, once, not in every worker

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def num_rows(self) -> int:
        """Rows this dataset yields per epoch over all ranks (before `equal_per_rank`). Without
        filters this is the footers' sum; with `kept_only`/`sample_ids` it reads the status and
        sample_id columns of every row group once (cached)."""
        return sum(self._item_counts())

    def _item_counts(self) -> list[int]:
        if self._counts is None:
            if not self.kept_only and self.sample_ids is None:
                self._counts = [it.rows for it in self.items]
            else:
                self._counts = [self._read(it, [], pf).num_rows for it, pf in _with_files(self.items)]
        return self._counts

    def _read(self, item: WorkItem, columns: list[str], pf: pq.ParquetFile) -> pa.Table:
        """The item's rows that pass the filters, `columns` only."""
        need = ["status"] * self.kept_only + ["sample_id"] * (self.sample_ids is not None)
        extra = [c for c in need if c not in columns]
        # use_threads=False: threaded reads from memory buffers can abort the process at exit here.
        table = pf.read_row_group(item.row_group, columns=columns + extra, use_threads=False)
        mask = None
        if self.kept_only:
            mask = pc.equal(table["status"], "kept")
        if self.sample_ids is not None:
            inside = pc.is_in(table["sample_id"], value_set=self._id_array())
            mask = inside if mask is None else pc.and_(mask, inside)
        if mask is not None:
            table = table.filter(pc.fill_null(mask, False))
        return table.select(columns)

    def _id_array(self) -> pa.Array:
        # Built once per process (not pickled: a split can hold millions of ids).
        arr = self.__dict__.get("_ids_arrow")
        if arr is None:
            arr = self.__dict__["_ids_arrow"] = pa.array(sorted(self.sample_ids or ()), pa.string())
        return arr

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_ids_arrow"}

    def _rank_world(self) -> tuple[int, int]:
        return (self.rank, self.world_size) if self.world_size is not None else _dist_rank_world()  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Any]:
        rank, world = self._rank_world()
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        n_global, me = world * nw, rank * nw + wid
        order = np.arange(len(self.items))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.items))
        mine = [int(i) for i in order[me::n_global]]
        quota: Optional[int] = None
        if self.equal_per_rank:
            counts = self._item_counts()
            quota = min(sum(counts[int(i)] for i in order[g::n_global]) for g in range(n_global))
        yielded = 0
        # Unshuffled, a worker's items come shard by shard, so each shard is opened once.
        for i, (item, pf) in zip(mine, _with_files(self.items[i] for i in mine)):
            if quota is not None and yielded >= quota:
                return
            rows = self._read(item, self.columns, pf).to_pylist()
            if self.shuffle:
                np.random.default_rng([self.seed, self.epoch, i]).shuffle(rows)
            for row in rows:
                if quota is not None and yielded >= quota:
                    return
                sample = Sample(row, self.decode)
                yield self.transform(sample) if self.transform is not None else sample
                yielded += 1

    def __repr__(self) -> str:
        return f"CorebuildDataset({len(self.shards)} shards, {len(self.items)} row groups, columns={self.columns})"
