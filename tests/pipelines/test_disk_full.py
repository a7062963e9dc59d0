"""Disk full / unwritable output: one clear error, and no half-written shard reported as done."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re

import pyarrow.parquet as pq
import pytest

from corebuild.shards import storage as storage_mod
from corebuild.cli import main
from corebuild.shards.storage import LocalStorage, _os_error
from tests.conftest import ROOT
from tests.pipelines.test_resume import UNIT, crowded, rows_of  # noqa: F401  (crowded: the clean build fixture)

SHARD = re.compile(r"^crowded/shards/part-u(\d{5})-\d{3}\.parquet$")


def _cli(output, manifests_dir, *extra: str) -> list[str]:
    return [
        "build", "--region", "crowded", "--manifests", str(manifests_dir), "--output", str(output),
        "--min-spacing", "1", "--unit-points", str(UNIT), "--no-progress", "--workers", "1", "--quota-of", "sampled", *extra,  # as the crowded fixture
    ]


def _check_markers(out) -> set[int]:
    """Every marker names only whole shards (bytes and rows as recorded); returns the units done."""
    store = LocalStorage(out)
    units = set()
    for name in store.list("crowded/_done/"):
        marker = json.loads(store.read(name))
        units.add(marker["unit"])
        assert sum(s["rows"] for s in marker["shards"]) == marker["rows"]
        for s in marker["shards"]:
            data = store.read(f"crowded/shards/{s['path']}")
            assert data is not None, f"{name} names a missing shard {s['path']}"
            assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
            assert pq.read_metadata(os.path.join(out, "crowded", "shards", s["path"])).num_rows == s["rows"]
    return units


def test_disk_full_mid_build_is_one_clear_error_then_a_rerun_finishes(crowded, tmp_path, manifests_dir, monkeypatch, capsys):  # noqa: F811
    clean, _ = crowded
    out = tmp_path / "out"
    real = LocalStorage.write_file
    stored, failed = [], []

    def full_after_two_shards(self, rel, src):
        m = SHARD.match(rel)
        if m is None:  # markers, _build.json, sampling: still fit
            return real(self, rel, src)
        if len(stored) < 2:
            stored.append(rel)
            return real(self, rel, src)
        failed.append(int(m.group(1)))
        os.unlink(src)  # as the real write_file does when it fails
        raise _os_error("writing", self._path(rel), OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.chdir(ROOT)  # the default prompts/ directory
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # the CLI's own logging to stderr, as a user sees it
    monkeypatch.setattr(storage_mod.LocalStorage, "write_file", full_after_two_shards)
    rc = main(_cli(out, manifests_dir))
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    assert failed, "the fault never fired"
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert "disk full writing" in lines[0] and str(out / "crowded" / "shards" / "part-u") in lines[0], lines[0]
    assert "Traceback" not in err, err[-3000:]

    # What is left: markers only for units whose shards are whole, no spool files, no manifest.
    done = _check_markers(str(out))
    assert not done & set(failed), f"marker for a unit whose shard failed: {sorted(done & set(failed))}"
    assert len(done) <= 2
    leftovers = [p for p in (out / "crowded").rglob("*") if p.name.startswith(storage_mod.TMP_PREFIX)]
    assert not leftovers, leftovers
    assert all(not n.rsplit("/", 1)[-1].startswith(storage_mod.TMP_PREFIX) for n in LocalStorage(out).list())
    assert not (out / "crowded" / "manifest.json").exists()

    # The disk has room again: the rerun resumes and ends with the clean build's rows.
    monkeypatch.setattr(storage_mod.LocalStorage, "write_file", real)
    rc = main(_cli(out, manifests_dir))
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    m = json.loads((out / "crowded" / "manifest.json").read_text())
    assert m["consistent"] and m["units"]["done"] == 6 and m["units"]["done_before_this_attempt"] == len(done)
    assert _check_markers(str(out)) == set(range(6))
    assert rows_of(str(out / "crowded")) == rows_of(str(clean.out_dir))


def test_output_that_is_a_file_is_one_clear_error(tmp_path, manifests_dir, monkeypatch, capsys):
    out = tmp_path / "not-a-dir"
    out.write_bytes(b"user data")
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    rc = main(_cli(out, manifests_dir))
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and str(out) in lines[0], err[-3000:]
    assert "Traceback" not in err
    assert out.read_bytes() == b"user data"  # nothing built, nothing replaced


# --- ENOSPC where a full disk is really first met: Arrow writing ShardWriter's spool file ---------
#
# What pyarrow does (checked with pyarrow 25): a write(2) that fails in its native file sink
# (pa.OSFile) raises a plain OSError (pyarrow.lib.ArrowIOError is OSError) with errno 28 and
# "[errno 28] No space left on device" in its message; through pa.PythonFile the Python OSError
# comes back as it was raised. The faults below are real: the bytes go to /dev/full, whose every
# write fails with ENOSPC in the kernel, not an exception our code makes up.

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


@needs_dev_full
def test_pyarrow_raises_oserror_enospc_from_a_full_device():
    import pyarrow as pa

    from corebuild.shards.schema import shard_schema

    sink = pa.OSFile("/dev/full", "wb")
    try:
        with pytest.raises(OSError) as info:
            pq.ParquetWriter(sink, shard_schema())  # the magic bytes are the first write
    finally:
        sink.close()
    assert info.value.errno == errno.ENOSPC and "no space left on device" in str(info.value).lower()


class _DiskWithRoom:
    """A spool file on a disk with `room` bytes free: bytes go to the real file until it is full,
    the rest to /dev/full, whose write(2) fails with ENOSPC (after a short write, as a disk does)."""

    def __init__(self, path, room: int):
        self._f = open(path, "wb", buffering=0)
        self._full = os.open("/dev/full", os.O_WRONLY)
        self.room, self.closed = room, False

    def write(self, data) -> int:
        data = memoryview(data)
        take = min(self.room, len(data))
        if take:
            self._f.write(data[:take])
            self.room -= take
        if take < len(data):
            os.write(self._full, data[take:])  # raises OSError(ENOSPC): the kernel's answer
        return len(data)

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._f.close()
            os.close(self._full)


def _rows(n: int):
    from tests.builds import fake_rows

    return fake_rows("r", -33.92, 18.42, n, fail_every=3)


def _full_at(monkeypatch, rooms):
    """ShardWriter's spool sinks: the k-th opened gets rooms[k] bytes of room (None: all it wants)."""
    import pyarrow as pa

    real_osfile, opened = pa.OSFile, []

    def osfile(path, mode="rb"):
        room = rooms[len(opened)] if len(opened) < len(rooms) else None
        opened.append(path)
        return real_osfile(path, mode) if room is None else pa.PythonFile(_DiskWithRoom(path, room), mode="w")

    monkeypatch.setattr(pa, "OSFile", osfile)
    return opened


def _shard_bytes(tmp_path, rows) -> int:
    """The size of the one shard these rows make (row groups of 4)."""
    from corebuild.shards.writer import ShardWriter

    w = ShardWriter(LocalStorage(tmp_path / "dry"), "s/part", row_group_rows=4, stable_names=True)
    for r in rows:
        w.write(r)
    w.close()
    return w.details[0]["bytes"]


@needs_dev_full
@pytest.mark.parametrize("where", ["magic", "first_row_group", "later_row_group", "footer"])
def test_spool_write_hitting_enospc_is_a_storage_error_and_leaves_nothing(tmp_path, monkeypatch, where):
    from corebuild.errors import StorageError
    from corebuild.shards.writer import ShardWriter

    rows = _rows(12)  # three row groups of four, one shard
    size = _shard_bytes(tmp_path, rows)
    room = {"magic": 0, "first_row_group": 100, "later_row_group": size // 3, "footer": size - 10}[where]
    store = LocalStorage(tmp_path / "out")
    opened = _full_at(monkeypatch, [room])
    w = ShardWriter(store, "s/part", row_group_rows=4, stable_names=True)
    with pytest.raises(StorageError) as info:
        for r in rows:
            w.write(r)
        w.close()
    assert opened, "the spool was never opened"
    assert str(info.value) == f"disk full writing {tmp_path / 'out' / 's' / 'part-000.parquet'}: no space left on device"
    assert "\n" not in str(info.value)
    assert os.listdir(tmp_path / "out" / "s") == []  # no shard, no spool file left behind
    assert w.written == [] and w.details == []
    with pytest.raises(RuntimeError, match="failed earlier"):  # spent: it cannot pretend to finish
        w.close()


@needs_dev_full
def test_enospc_in_the_second_shard_keeps_only_the_first_whole(tmp_path, monkeypatch):
    from corebuild.errors import StorageError
    from corebuild.shards.writer import ShardWriter

    rows = _rows(8)
    store = LocalStorage(tmp_path / "out")
    _full_at(monkeypatch, [None, 0])  # the first spool has room; the disk is full for the second
    w = ShardWriter(store, "s/part", row_group_rows=4, target_bytes=1, stable_names=True)  # a shard per row group
    with pytest.raises(StorageError, match=r"^disk full writing .*part-001\.parquet: no space left on device$"):
        for r in rows:
            w.write(r)
        w.close()
    assert sorted(os.listdir(tmp_path / "out" / "s")) == ["part-000.parquet"]  # stored whole, before the fault
    assert pq.read_metadata(tmp_path / "out" / "s" / "part-000.parquet").num_rows == 4
    assert [d["path"] for d in w.details] == ["part-000.parquet"]


@needs_dev_full
def test_a_spool_elsewhere_is_named_with_the_object_it_was_for(tmp_path):
    """gs:// shards spool in the local temp directory: the full disk is that one, so say so."""
    from corebuild.errors import StorageError
    from corebuild.shards.writer import ShardWriter

    spools = []

    class TempSpoolStorage:  # GCSStorage's shape: spool files in a temp directory, objects elsewhere
        url = "gs://bucket/builds"

        def join(self, rel):
            return f"{self.url}/{rel}"

        def spool_path(self, rel):
            path = tmp_path / f"{storage_mod.TMP_PREFIX}{len(spools)}"
            os.symlink("/dev/full", path)  # the temp directory's disk is full
            spools.append(path)
            return path

        def write_file(self, rel, src):
            raise AssertionError("nothing should be stored")

    w = ShardWriter(TempSpoolStorage(), "r/shards/part-u00000", row_group_rows=4, stable_names=True)
    with pytest.raises(StorageError) as info:
        for r in _rows(4):
            w.write(r)
    assert str(info.value) == (
        f"disk full writing {spools[0]} (the local spool file of gs://bucket/builds/r/shards/part-u00000-000.parquet): no space left on device"
    )
    assert not os.path.lexists(spools[0])


@needs_dev_full
def test_disk_full_in_the_spool_write_is_one_clear_error_then_a_rerun_finishes(crowded, tmp_path, manifests_dir, monkeypatch, capsys):  # noqa: F811
    """The whole build, with the disk filling up where it really does: while Arrow writes a
    shard's spool file (the third shard's spool is on /dev/full)."""
    clean, _ = crowded
    out = tmp_path / "out"
    real = LocalStorage.spool_path
    spooled, failed = [], []

    def spool_on_a_full_disk(self, rel):
        path = real(self, rel)
        m = SHARD.match(rel)
        if m is None:  # markers, _build.json, sampling: Python writes, and they still fit
            return path
        if len(spooled) < 2:
            spooled.append(rel)
            return path
        failed.append(int(m.group(1)))
        os.symlink("/dev/full", path)  # Arrow's native sink opens it and its first write(2) gets ENOSPC
        return path

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(storage_mod.LocalStorage, "spool_path", spool_on_a_full_disk)
    rc = main(_cli(out, manifests_dir))
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    assert failed, "the fault never fired"
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert re.fullmatch(
        rf"error: disk full writing {re.escape(str(out / 'crowded' / 'shards'))}/part-u\d{{5}}-000\.parquet: no space left on device"
        r"( \[while running '[^']*'\])?",  # Beam's note on which step raised it
        lines[0],
    ), lines[0]
    assert "Traceback" not in err, err[-3000:]

    done = _check_markers(str(out))
    assert not done & set(failed), f"marker for a unit whose shard failed: {sorted(done & set(failed))}"
    assert len(done) <= 2
    leftovers = [p for p in (out / "crowded").rglob("*") if p.name.startswith(storage_mod.TMP_PREFIX) or p.is_symlink()]
    assert not leftovers, leftovers  # the spool on the full disk was dropped
    assert not (out / "crowded" / "manifest.json").exists()

    monkeypatch.setattr(storage_mod.LocalStorage, "spool_path", real)
    rc = main(_cli(out, manifests_dir))
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    m = json.loads((out / "crowded" / "manifest.json").read_text())
    assert m["consistent"] and m["units"]["done"] == 6 and m["units"]["done_before_this_attempt"] == len(done)
    assert _check_markers(str(out)) == set(range(6))
    assert rows_of(str(out / "crowded")) == rows_of(str(clean.out_dir))
