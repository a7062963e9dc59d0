"""ShardWriter: rows -> Parquet shards (schema from corebuild.shards.schema), rolled over by
size and stored atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from corebuild.shards.schema import shard_schema


def image_columns(schema: pa.Schema) -> list[str]:
    """Encoded images are incompressible and never repeat: zstd and dictionaries only cost CPU
    there. They are the binary leaves but the WKB point (each view's and each crop's image)."""
    return [p for p, t in _leaves(schema) if pa.types.is_binary(t) and p != "geometry"]


class ShardWriter:
    """Rows -> Parquet shards in a Storage (local directory or gs://), rolling over by size.

    A shard is encoded straight into a spool file (beside its final name locally, a temp file
    for gs://) and then stored atomically (rename / one upload), so a shard exists whole or not
    at all and memory holds one row group, not a shard. Row groups hold `row_group_rows` rows
    (rows carry ~0.3 MB of images). A finished shard is stored and hashed on a background thread
    while the next one encodes (at most one in flight); `close()` returns only once every shard
    is stored, so a caller may then write a completion marker.

    An OSError while Arrow writes the spool (a full disk is first met there: ENOSPC from the
    sink's write) becomes a StorageError naming the shard ("disk full writing ..."), and any error
    in `write` or `close` drops the half-written spool file: the writer is then spent.
    """

    def __init__(
        self, storage, prefix: str, target_bytes: int = 256 * 1024 * 1024, row_group_rows: int = 32, codec: str = "zstd", stable_names: bool = False
    ):
        import uuid

        self.storage, self.prefix, self.stable_names = storage, prefix, stable_names
        self.target_bytes, self.row_group_rows, self.codec = target_bytes, row_group_rows, codec
        self.schema = shard_schema()
        paths, images = _column_paths(self.schema), image_columns(self.schema)
        self._options = {
            "compression": {name: ("none" if name in images else codec) for name in paths},
            # Dictionaries and min/max statistics of unique image/WKB bytes help no reader and cost a pass.
            "use_dictionary": [n for n in paths if n not in images and n != "geometry"],
            "write_statistics": [n for n in paths if n not in images and n != "geometry"],
        }
        self._tag = uuid.uuid4().hex[:12]  # unique per writer: workers never collide
        self._rows: list[dict[str, Any]] = []
        self._sink = None  # (spool path or BytesIO, pyarrow sink)
        self._writer = None
        self._n = 0
        self.written: list[tuple[str, int]] = []  # (name, rows)
        self.details: list[dict[str, Any]] = []  # path (base name), rows, bytes, sha256
        self._shard_rows = 0
        self._pool = None
        self._pending = None  # the shard being stored
        self._spent = False  # an error dropped the shard being written

    def _name(self) -> str:
        # Stable names (a work unit's shards) are overwritten by a retry; unique ones never collide.
        return f"{self.prefix}-{self._n:03d}.parquet" if self.stable_names else f"{self.prefix}-{self._tag}-{self._n:04d}.parquet"

    def write(self, row: dict[str, Any]) -> None:
        if self._spent:
            raise RuntimeError(f"ShardWriter({self.prefix!r}) failed earlier; its rows are lost")
        self._rows.append(row)
        if len(self._rows) >= self.row_group_rows:
            try:
                self._flush_rows()
                if self._writer is not None and self._sink[1].tell() >= self.target_bytes:
                    self._finish_shard()
            except BaseException:
                self._discard()
                raise

    def _spool_error(self, exc: OSError) -> Exception:
        """An OSError from writing the spool -> StorageError naming the shard (and the spool
        file when it lies elsewhere, as gs:// spools in the local temp directory do)."""
        import os

        from corebuild.shards.storage import _os_error

        join = getattr(self.storage, "join", None)
        where = join(self._name()) if join else self._name()
        spool = self._sink[0] if self._sink is not None else None
        if isinstance(spool, Path) and os.path.dirname(where) != str(spool.parent):
            where = f"{spool} (the local spool file of {where})"
        return _os_error("writing", where, exc)

    def _flush_rows(self) -> None:
        import io

        import pyarrow.parquet as pq

        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        try:
            if self._writer is None:
                spool = getattr(self.storage, "spool_path", None)
                if spool is not None:
                    path = spool(self._name())
                    self._sink = (path, None)  # an error opening it still drops the file (gs:// spools exist already)
                    self._sink = (path, pa.OSFile(str(path), "wb"))  # native writes: no Python per page
                else:  # a Storage without spooling (e.g. a test double): build the shard in memory
                    buf = io.BytesIO()
                    self._sink = (buf, pa.PythonFile(buf, mode="w"))
                self._writer = pq.ParquetWriter(self._sink[1], self.schema, **self._options)  # writes the magic bytes
            self._writer.write_table(table, row_group_size=len(self._rows))
        except OSError as exc:  # pyarrow raises the sink's OSError (errno set) as it is
            raise self._spool_error(exc) from None
        self._shard_rows += len(self._rows)
        self._rows = []

    def _finish_shard(self) -> None:
        if self._writer is None:
            return
        from concurrent.futures import ThreadPoolExecutor

        where, sink = self._sink
        try:
            self._writer.close()  # the footer: the last bytes of the spool
            size = sink.tell()
            sink.close()
        except OSError as exc:
            raise self._spool_error(exc) from None
        self._wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="corebuild-shard")
        self._pending = self._pool.submit(self._store, self._name(), where, self._shard_rows, size)
        self._n += 1
        self._writer, self._sink, self._shard_rows = None, None, 0

    def _store(self, name: str, where, rows: int, size: int) -> None:
        import hashlib

        if isinstance(where, Path):
            digest = hashlib.sha256()
            with open(where, "rb") as f:  # from the page cache: the bytes were just written
                for block in iter(lambda: f.read(8 << 20), b""):
                    digest.update(block)
            self.storage.write_file(name, where)
        else:
            data = where.getvalue()
            digest = hashlib.sha256(data)
            self.storage.write(name, data)
        self.written.append((name, rows))
        self.details.append({"path": name.rsplit("/", 1)[-1], "rows": rows, "bytes": size, "sha256": digest.hexdigest()})

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # a storage error (disk full) surfaces here, in the caller

    def _discard(self) -> None:
        """After an error: drop the shard being written (its spool file), let a shard already
        being stored finish (its own error, if any, is not the one reported), and stop."""
        from contextlib import suppress

        self._spent = True
        self._rows = []
        if self._sink is not None:
            where, sink = self._sink
            if self._writer is not None:
                with suppress(Exception):  # writes a footer that nobody reads; may fail the same way
                    self._writer.close()
            if sink is not None:
                with suppress(Exception):
                    sink.close()
            if isinstance(where, Path):
                with suppress(OSError):
                    where.unlink(missing_ok=True)
            self._writer, self._sink = None, None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending = None

    def close(self) -> list[tuple[str, int]]:
        if self._spent:
            raise RuntimeError(f"ShardWriter({self.prefix!r}) failed earlier; its rows are lost")
        try:
            self._flush_rows()
            self._finish_shard()
            self._wait()
        except BaseException:
            self._discard()
            raise
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return self.written


def _column_paths(schema: pa.Schema) -> list[str]:
    """Parquet leaf column paths (`street_views.list.element.image`), as writer options name them."""
    return [p for p, _ in _leaves(schema)]


def _leaves(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    out: list[tuple[str, pa.DataType]] = []

    def walk(prefix: str, typ: pa.DataType) -> None:
        if pa.types.is_struct(typ):
            for f in typ:
                walk(f"{prefix}.{f.name}", f.type)
        elif pa.types.is_list(typ):
            walk(f"{prefix}.list.element", typ.value_type)
        else:
            out.append((prefix, typ))

    for f in schema:
        walk(f.name, f.type)
    return out
