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

from corebuild import storage as storage_mod
from corebuild.cli import main
from corebuild.storage import LocalStorage, _os_error
from tests.conftest import ROOT
from tests.pipelines.test_resume import UNIT, crowded, rows_of  # noqa: F401  (crowded: the clean build fixture)

SHARD = re.compile(r"^crowded/shards/part-u(\d{5})-\d{3}\.parquet$")


def _cli(output, manifests_dir, *extra: str) -> list[str]:
    return [
        "build", "--region", "crowded", "--manifests", str(manifests_dir), "--output", str(output),
        "--min-spacing", "1", "--unit-points", str(UNIT), "--no-progress", "--workers", "1", *extra,
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
