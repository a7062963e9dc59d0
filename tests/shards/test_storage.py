"""Storage over a local directory and over gs:// (gcp-storage-emulator): same behaviour, same errors."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from corebuild.errors import StorageError
from corebuild.shards.storage import GCP_EXTRA_HINT, TMP_PREFIX, GCSStorage, LocalStorage, Storage, open_storage


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "store"))
    emulator = request.getfixturevalue("gcs_emulator")
    # One bucket for the session; a fresh prefix keeps tests apart.
    return open_storage(f"gs://{emulator['bucket']}/t-{uuid.uuid4().hex[:12]}")


def test_round_trip(store):
    data = bytes(range(256)) * 40
    store.write("a/b/data.bin", data)
    assert store.read("a/b/data.bin") == data
    store.write("empty", b"")
    assert store.read("empty") == b""  # an empty object is not a missing one
    assert isinstance(store, Storage)


def test_missing_object_reads_none(store):
    assert store.read("nope") is None
    assert store.read("no/such/dir/nope") is None
    assert store.exists("nope") is False
    assert store.list() == []


def test_overwrite(store):
    store.write("x", b"first version, longer")
    store.write("x", b"second")
    assert store.read("x") == b"second"
    assert store.list() == ["x"]


def test_exists(store):
    store.write("d/obj", b"1")
    assert store.exists("d/obj")
    assert not store.exists("d/other")
    assert not store.exists("d")  # a "directory" is not an object


def test_list_with_prefix(store):
    names = ["blobs/aa/1", "blobs/ab/2", "blobs/b0/3", "refs/aa/4", "top"]
    for n in reversed(names):
        store.write(n, n.encode())
    assert store.list() == names
    assert store.list("blobs/") == names[:3]
    assert store.list("blobs/a") == names[:2]  # a prefix is a string prefix, not a directory
    assert store.list("blobs/aa/") == ["blobs/aa/1"]
    assert store.list("blobs/aa/1") == ["blobs/aa/1"]
    assert store.list("t") == ["top"]
    assert store.list("nothing/") == []


def test_delete(store):
    store.write("d/gone", b"1")
    store.write("d/kept", b"2")
    store.delete("d/gone")
    assert store.read("d/gone") is None
    assert store.list() == ["d/kept"]
    store.delete("d/gone")  # already absent: no error
    store.delete("never/was")


BAD_NAMES = ["../escape", "a/../../escape", "..", "/etc/passwd", "a/./b", "a//b", ""]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_path_traversal_rejected(store, bad, tmp_path):
    for call in (lambda: store.read(bad), lambda: store.write(bad, b"x"), lambda: store.exists(bad), lambda: store.delete(bad), lambda: store.join(bad)):
        with pytest.raises(StorageError, match="absolute|traversal|empty"):
            call()
    assert not (tmp_path / "escape").exists()
    assert store.list() == []


@pytest.mark.parametrize("bad", ["../", "a/../", "/abs"])
def test_list_prefix_traversal_rejected(store, bad):
    with pytest.raises(StorageError):
        store.list(bad)


def test_join(tmp_path):
    local = open_storage(str(tmp_path / "root"))
    assert local.join("a/b") == str(tmp_path / "root" / "a" / "b")
    gcs = open_storage("gs://bkt/some/prefix/")
    assert gcs.url == "gs://bkt/some/prefix"
    assert gcs.join("a/b") == "gs://bkt/some/prefix/a/b"
    assert open_storage("gs://bkt").join("a") == "gs://bkt/a"


def test_open_storage_urls(tmp_path):
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    via_url = open_storage(f"file://{tmp_path}/x%20y")
    assert isinstance(via_url, LocalStorage) and via_url.url == str(tmp_path / "x y")
    assert open_storage(f"file://localhost{tmp_path}").url == str(tmp_path)
    gcs = open_storage("gs://bkt/pre")
    assert isinstance(gcs, GCSStorage) and (gcs.bucket_name, gcs.prefix) == ("bkt", "pre/")
    for bad, words in [("s3://b/p", "unsupported"), ("gs://", "no bucket"), ("gs:///p", "no bucket"), ("file://host/p", "host"), ("", "empty"), ("gs://b/../x", "traversal")]:
        with pytest.raises(StorageError, match=words):
            open_storage(bad)


def test_missing_bucket_names_it(gcs_emulator):
    store = open_storage("gs://corebuild-no-such-bucket/pre")
    for call in (lambda: store.write("x", b"1"), lambda: store.read("x"), lambda: store.exists("x"), lambda: store.list(), lambda: store.delete("x")):
        with pytest.raises(StorageError, match="bucket gs://corebuild-no-such-bucket does not exist"):
            call()


def test_gcs_client_made_once_and_anonymous_under_emulator(gcs_emulator, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    made: list[dict] = []
    real = storage.Client

    def counting_client(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "Client", counting_client)
    store = open_storage(f"gs://{gcs_emulator['bucket']}/once")
    assert made == []  # lazy: nothing until first use
    store.write("a", b"1")
    store.read("a")
    store.read("missing")
    store.list()
    assert len(made) == 1
    assert isinstance(made[0]["credentials"], AnonymousCredentials) and made[0]["project"] == "corebuild-local"


def test_gcs_storage_pickles_without_its_client(gcs_emulator):
    store = open_storage(f"gs://{gcs_emulator['bucket']}/pickled")
    store.write("a", b"1")
    clone = pickle.loads(pickle.dumps(store))  # a Beam worker gets a copy like this
    assert clone.url == store.url and clone._bucket is None
    assert clone.read("a") == b"1"


def test_gcs_permission_denied(monkeypatch):
    from google.api_core import exceptions as api_exc

    class DeniedBlob:
        def __getattr__(self, name):
            def denied(*args, **kwargs):
                raise api_exc.Forbidden("caller does not have storage.objects.get access")

            return denied

    class DeniedBucket:
        def blob(self, name):
            return DeniedBlob()

    store = GCSStorage("bkt", "pre")
    monkeypatch.setattr(store, "_handle", lambda: DeniedBucket())
    with pytest.raises(StorageError, match=r"permission denied reading gs://bkt/pre/x: .*storage\.objects\.get"):
        store.read("x")
    with pytest.raises(StorageError, match=r"permission denied writing gs://bkt/pre/x"):
        store.write("x", b"1")


def test_gcs_without_the_package(monkeypatch):
    import google.cloud

    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)  # makes the import fail
    monkeypatch.delattr(google.cloud, "storage", raising=False)
    store = open_storage("gs://bkt/pre")  # opening needs nothing yet
    with pytest.raises(StorageError) as info:
        store.read("x")
    assert str(info.value) == GCP_EXTRA_HINT


def test_package_imports_without_google():
    # An installed google namespace package (apache-beam[gcp] brings an -nspkg.pth) puts `google`
    # and `google.cloud` in sys.modules at start-up: only what corebuild adds counts.
    code = (
        "import sys; before = {m for m in sys.modules if m.startswith('google')}; import corebuild.shards.storage, corebuild.shards.cache; "
        "print(sorted(m for m in sys.modules if m.startswith('google') and m not in before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- local only: errors from the file system, atomic replacement ---


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def test_local_disk_full_keeps_old_object(tmp_path, monkeypatch):
    store = LocalStorage(tmp_path / "s")
    store.write("d/obj", b"old")
    monkeypatch.setattr(os, "fsync", _raise(errno.ENOSPC))
    with pytest.raises(StorageError) as info:
        store.write("d/obj", b"new")
    assert str(info.value) == f"disk full writing {tmp_path / 's' / 'd' / 'obj'}: no space left on device"
    monkeypatch.undo()
    assert store.read("d/obj") == b"old"
    assert os.listdir(tmp_path / "s" / "d") == ["obj"]  # the temp file was removed


@pytest.mark.parametrize("code,words", [(errno.EACCES, "permission denied writing"), (errno.EROFS, "read-only file system writing")])
def test_local_unwritable_mapped(tmp_path, monkeypatch, code, words):
    store = LocalStorage(tmp_path / "s")
    monkeypatch.setattr(os, "replace", _raise(code))
    with pytest.raises(StorageError, match=f"^{words} {tmp_path / 's' / 'obj'}$"):
        store.write("obj", b"1")
    monkeypatch.undo()
    assert store.list() == [] and os.listdir(tmp_path / "s") == []


def test_local_root_that_is_a_file_is_a_clear_error(tmp_path):
    # A real OS refusal that holds for root too (chmod does not stop root): the output
    # "directory" is an existing file.
    (tmp_path / "taken").write_text("x")
    with pytest.raises(StorageError, match=f"^error writing {tmp_path / 'taken' / 'obj'}: File exists$"):
        LocalStorage(tmp_path / "taken").write("obj", b"1")


def test_local_missing_root_is_empty(tmp_path):
    store = LocalStorage(tmp_path / "not-yet")
    assert store.read("a") is None and store.list() == [] and not store.exists("a")
    store.delete("a")
    assert not (tmp_path / "not-yet").exists()  # reading creates nothing


def test_local_in_flight_temp_files_are_not_listed(tmp_path):
    store = LocalStorage(tmp_path)
    store.write("d/real", b"1")
    (tmp_path / "d" / f"{TMP_PREFIX}deadbeef").write_bytes(b"half")
    assert store.list() == ["d/real"]


def test_local_reader_never_sees_a_partial_object(tmp_path):
    store = LocalStorage(tmp_path)
    a, b = b"A" * 300_000, b"B" * 200_000
    store.write("obj", a)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(40):
                store.write("obj", b if i % 2 == 0 else a)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=writer)
    t.start()
    while not stop.is_set():
        got = store.read("obj")
        assert got in (a, b), f"partial read of {len(got or b'')} bytes"
    t.join()
    assert errors == []
    assert store.read("obj") == a
    assert [p.name for p in Path(tmp_path).iterdir()] == ["obj"]
