"""Where outputs and caches keep their bytes: a local directory or a gs:// bucket, behind one
small interface (`Storage`) so the rest of the code never branches on where it writes.

Object names (`rel`) are relative, `/`-separated and may not climb out of the root.
google-cloud-storage is imported only when a gs:// location is first used (extra `gcp`).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import threading
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, TypeVar, runtime_checkable
from urllib.parse import unquote

from corebuild.errors import StorageError

if TYPE_CHECKING:
    import pyarrow.parquet as pq
    from google.cloud.storage import Bucket

GCP_EXTRA_HINT = "gs:// needs google-cloud-storage: pip install 'corebuild[gcp]'"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
EMULATOR_PROJECT = "corebuild-local"
TMP_PREFIX = ".corebuild-tmp-"  # in-flight local writes; never listed

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_T = TypeVar("_T")


@runtime_checkable
class Storage(Protocol):
    """A flat namespace of objects under one root. Writes are atomic: a reader sees the old
    object, the new one, or none, never part of one."""

    url: str

    def read(self, rel: str) -> Optional[bytes]:
        """The object's bytes, or None when there is no such object."""
        ...

    def write(self, rel: str, data: bytes) -> None: ...

    def open_read(self, rel: str):
        """A seekable binary file for random access (Parquet footers, row groups)."""
        ...

    def exists(self, rel: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """Names (relative to the root) that start with `prefix`, sorted."""
        ...

    def delete(self, rel: str) -> None:
        """Remove the object; no error when it is already gone."""
        ...

    def join(self, rel: str) -> str:
        """The full path or URL of an object."""
        ...


def check_rel(rel: str, where: str, *, prefix: bool = False) -> str:
    """`rel` if it is a safe relative object name, else StorageError.

    Empty and `.` components are refused too: a local path collapses them and GCS does not,
    so allowing them would make the two backends disagree on what a name means.
    A list prefix may be empty or end with `/`.
    """
    if not isinstance(rel, str):
        raise StorageError(f"{where}: object name must be a string, not {type(rel).__name__}")
    if prefix and rel == "":
        return rel
    if rel == "":
        raise StorageError(f"{where}: empty object name")
    if "\x00" in rel:
        raise StorageError(f"{where}: object name {rel!r} contains a NUL byte")
    if rel.startswith(("/", "\\")) or os.path.isabs(rel) or re.match(r"^[A-Za-z]:[\\/]", rel):
        raise StorageError(f"{where}: object name {rel!r} is absolute; names are relative to the root")
    parts = rel.split("/")
    if prefix and parts[-1] == "":
        parts = parts[:-1]
    for part in parts:
        if part in ("..", "."):
            raise StorageError(f"{where}: object name {rel!r} has a {part!r} component (path traversal is refused)")
        if part == "":
            raise StorageError(f"{where}: object name {rel!r} has an empty component")
    return rel


def _os_error(doing: str, path: object, exc: OSError) -> StorageError:
    code = exc.errno
    if code == errno.ENOSPC:
        return StorageError(f"disk full {doing} {path}: no space left on device")
    if code == getattr(errno, "EDQUOT", errno.ENOSPC):
        return StorageError(f"disk full {doing} {path}: disk quota exceeded")
    if code in (errno.EACCES, errno.EPERM):
        return StorageError(f"permission denied {doing} {path}")
    if code == errno.EROFS:
        return StorageError(f"read-only file system {doing} {path}")
    return StorageError(f"error {doing} {path}: {exc.strerror or exc}")


class LocalStorage:
    """A directory; created on first write."""

    def __init__(self, root: str | os.PathLike[str]):
        if str(root) == "":
            raise StorageError("empty local storage path")
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStorage({self.url!r})"

    def _path(self, rel: str, *, prefix: bool = False) -> Path:
        rel = check_rel(rel, self.url, prefix=prefix)
        return self.root.joinpath(*[p for p in rel.split("/") if p])

    def join(self, rel: str) -> str:
        return str(self._path(rel))

    def open_read(self, rel: str):
        """A seekable binary file for random access (Parquet footers, row groups) without reading it all."""
        return open(self._path(rel), "rb")

    def read(self, rel: str) -> Optional[bytes]:
        path = self._path(rel)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _os_error("reading", path, exc) from None

    def write(self, rel: str, data: bytes) -> None:
        path = self._path(rel)
        tmp = self.spool_path(rel)
        try:
            with open(tmp, "xb") as f:  # mode 0o666 less umask, like any other file we write
                f.write(data)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise _os_error("writing", path, exc) from None
        self.write_file(rel, tmp)

    def spool_path(self, rel: str) -> Path:
        """Where to build an object before `write_file`: beside its final name (same file
        system, so storing it is a rename), under a name `list` never shows."""
        path = self._path(rel)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error("writing", path, exc) from None
        return path.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"

    def write_file(self, rel: str, src: str | os.PathLike[str]) -> None:
        """Store a finished local file as `rel`, atomically and durably; `src` is consumed."""
        path = self._path(rel)
        src = Path(src)
        try:
            if src.parent != path.parent:  # a rename across file systems is not atomic: copy beside it first
                tmp = self.spool_path(rel)
                shutil.copyfile(src, tmp)
                src.unlink()
                src = tmp
            # Without fsync a crash can leave an empty file under the final name.
            with open(src, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(src, path)
            # The rename is durable only once the directory is synced: a completion marker
            # written after this must never outlive its shard in a crash.
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(src)
            raise _os_error("writing", path, exc) from None

    def exists(self, rel: str) -> bool:
        return self._path(rel).is_file()

    def list(self, prefix: str = "") -> list[str]:
        check_rel(prefix, self.url, prefix=True)
        head = prefix.rpartition("/")[0]
        start = self._path(head, prefix=True) if head else self.root

        def onerror(exc: OSError) -> None:
            if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise _os_error("listing", exc.filename or start, exc)

        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start, onerror=onerror):
            base = Path(dirpath).relative_to(self.root).as_posix()
            base = "" if base == "." else base + "/"
            # Descend only where names can still match the prefix.
            dirnames[:] = [d for d in dirnames if (base + d + "/").startswith(prefix) or prefix.startswith(base + d + "/")]
            out.extend(base + f for f in filenames if not f.startswith(TMP_PREFIX) and (base + f).startswith(prefix))
        return sorted(out)

    def remove_stale_temps(self, prefix: str) -> int:
        """Delete in-flight temp files under `prefix` that a killed process left behind (a
        partial shard can be tens of MB). Only while no other writer works there: at the start
        and the end of a build. GCS has none: its uploads are atomic."""
        check_rel(prefix, self.url, prefix=True)
        start = self._path(prefix.rstrip("/"), prefix=True) if prefix.rstrip("/") else self.root
        n = 0
        for dirpath, _, filenames in os.walk(start):
            for f in filenames:
                if f.startswith(TMP_PREFIX):
                    Path(dirpath, f).unlink(missing_ok=True)
                    n += 1
        return n

    def delete(self, rel: str) -> None:
        path = self._path(rel)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise _os_error("deleting", path, exc) from None


class GCSStorage:
    """Objects under `prefix` in a Cloud Storage bucket. Uploads are atomic on the server.

    With STORAGE_EMULATOR_HOST set (tests, local runs) the client is anonymous, so nothing
    waits for Google credentials. The client is made on first use (it does not pickle, and a
    Beam worker unpickles this object before using it) and then reused.
    """

    def __init__(self, bucket: str, prefix: str = ""):
        if not bucket or "/" in bucket:
            raise StorageError(f"gs://{bucket}: not a bucket name")
        prefix = prefix.strip("/")
        if prefix:
            check_rel(prefix, f"gs://{bucket}/{prefix}")
        self.bucket_name = bucket
        self.prefix = prefix + "/" if prefix else ""
        self.url = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._bucket: Optional[Bucket] = None
        self._bucket_seen = False  # the bucket is known to exist (checked once, after a 404)

    def __getstate__(self) -> dict[str, Any]:
        return {"bucket_name": self.bucket_name, "prefix": self.prefix, "url": self.url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"GCSStorage({self.url!r})"

    def join(self, rel: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(rel)}"

    def _name(self, rel: str, *, prefix: bool = False) -> str:
        return self.prefix + check_rel(rel, self.url, prefix=prefix)

    def _handle(self) -> Bucket:
        with self._lock:
            if self._bucket is None:
                try:
                    from google.cloud import storage
                except ImportError:
                    raise StorageError(GCP_EXTRA_HINT) from None
                from google.auth import exceptions as auth_exc

                try:
                    if os.environ.get(EMULATOR_ENV):
                        from google.auth.credentials import AnonymousCredentials

                        client = storage.Client(credentials=AnonymousCredentials(), project=EMULATOR_PROJECT)
                    else:
                        client = storage.Client()
                except auth_exc.GoogleAuthError as exc:
                    raise StorageError(
                        f"no Google credentials for {self.url}: run `gcloud auth application-default login` "
                        f"or set GOOGLE_APPLICATION_CREDENTIALS ({exc})"
                    ) from None
                self._bucket = client.bucket(self.bucket_name)
            return self._bucket

    def _missing_bucket(self) -> StorageError:
        return StorageError(f"bucket gs://{self.bucket_name} does not exist (storage {self.url})")

    def _call(self, doing: str, target: str, fn: Callable[[], _T]) -> _T:
        """Run one client call, turning library errors into StorageError. NotFound passes
        through: only the caller knows whether a 404 means "no such object" or a missing bucket."""
        from google.api_core import exceptions as api_exc
        from google.auth import exceptions as auth_exc

        try:
            return fn()
        except api_exc.NotFound:
            raise
        except (api_exc.Forbidden, api_exc.Unauthorized) as exc:
            raise StorageError(f"permission denied {doing} {target}: {exc.message}") from None
        except api_exc.GoogleAPICallError as exc:
            raise StorageError(f"error {doing} {target}: HTTP {exc.code}: {exc.message}") from None
        except (api_exc.GoogleAPIError, auth_exc.GoogleAuthError) as exc:  # retries ran out, credentials
            raise StorageError(f"error {doing} {target}: {type(exc).__name__}: {exc}") from None
        except OSError as exc:  # requests' ConnectionError/Timeout are OSErrors
            raise StorageError(f"cannot reach Cloud Storage {doing} {target}: {type(exc).__name__}") from None

    def _after_not_found(self) -> None:
        """An object 404 is a plain miss, unless the bucket itself is missing: check that once.
        A 403 on the check means no storage.buckets.get permission (objectAdmin lacks it), and
        the object call already reached the bucket, so take it as existing."""
        if self._bucket_seen:
            return
        from google.api_core import exceptions as api_exc

        bucket = self._handle()

        def check() -> bool:
            try:
                return bool(bucket.exists())
            except api_exc.Forbidden:
                return True

        found = self._call("checking", f"gs://{self.bucket_name}", check)
        if not found:
            raise self._missing_bucket()
        self._bucket_seen = True

    def open_read(self, rel: str):
        """A seekable binary file: the client's BlobReader does ranged, chunked downloads."""
        return self._handle().blob(self._name(rel)).open("rb")

    def read(self, rel: str) -> Optional[bytes]:
        from google.api_core import exceptions as api_exc

        name = self._name(rel)
        blob = self._handle().blob(name)
        try:
            data: bytes = self._call("reading", self.join(rel), blob.download_as_bytes)
        except api_exc.NotFound:
            self._after_not_found()
            return None
        return data

    def write(self, rel: str, data: bytes) -> None:
        from google.api_core import exceptions as api_exc
        from google.cloud.storage.retry import DEFAULT_RETRY

        name = self._name(rel)
        blob = self._handle().blob(name)
        data = data if isinstance(data, bytes) else bytes(data)  # the client wants bytes, not a view
        try:
            # Rewriting the same bytes is harmless, so retrying an upload is safe here.
            self._call(
                "writing",
                self.join(rel),
                lambda: blob.upload_from_string(data, content_type="application/octet-stream", retry=DEFAULT_RETRY),
            )
        except api_exc.NotFound:
            raise self._missing_bucket() from None
        self._bucket_seen = True

    def spool_path(self, rel: str) -> Path:
        """A local temporary file to build a large object in before `write_file` uploads it."""
        import tempfile

        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX)
        os.close(fd)
        return Path(name)

    def write_file(self, rel: str, src: str | os.PathLike[str]) -> None:
        """Upload a finished local file as `rel` (atomic on the server); `src` is consumed."""
        from google.api_core import exceptions as api_exc
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self._handle().blob(self._name(rel))
        try:
            self._call(
                "writing",
                self.join(rel),
                lambda: blob.upload_from_filename(str(src), content_type="application/octet-stream", retry=DEFAULT_RETRY),
            )
        except api_exc.NotFound:
            raise self._missing_bucket() from None
        finally:
            with suppress(OSError):
                os.unlink(src)
        self._bucket_seen = True

    def exists(self, rel: str) -> bool:
        from google.api_core import exceptions as api_exc

        blob = self._handle().blob(self._name(rel))
        try:
            found = self._call("checking", self.join(rel), blob.exists)
        except api_exc.NotFound:
            found = False
        if not found:
            self._after_not_found()
        return bool(found)

    def list(self, prefix: str = "") -> list[str]:
        from google.api_core import exceptions as api_exc

        full = self._name(prefix, prefix=True)
        bucket = self._handle()
        try:
            names = self._call("listing", f"gs://{self.bucket_name}/{full}", lambda: [b.name for b in bucket.client.list_blobs(bucket, prefix=full)])
        except api_exc.NotFound:
            raise self._missing_bucket() from None
        self._bucket_seen = True
        return sorted(n[len(self.prefix) :] for n in names if n.startswith(self.prefix))

    def delete(self, rel: str) -> None:
        from google.api_core import exceptions as api_exc

        blob = self._handle().blob(self._name(rel))
        try:
            self._call("deleting", self.join(rel), blob.delete)
        except api_exc.NotFound:
            self._after_not_found()


def open_storage(url: str) -> Storage:
    """`gs://bucket/prefix` -> GCSStorage; a path or `file:///path` -> LocalStorage."""
    if not url:
        raise StorageError("empty storage URL")
    m = _SCHEME.match(url)
    if m is None:
        return LocalStorage(url)
    scheme, rest = m.group(1).lower(), url[m.end() :]
    if scheme == "gs":
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StorageError(f"{url}: no bucket name (expected gs://bucket/prefix)")
        return GCSStorage(bucket, prefix)
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise StorageError(f"{url}: a file:// URL names no host (use file:///absolute/path)")
        if not path:
            raise StorageError(f"{url}: no path")
        return LocalStorage(unquote(slash + path))
    raise StorageError(f"{url}: unsupported storage scheme {scheme}:// (use a local path, file:// or gs://)")


def open_parquet(storage: Storage, name: str) -> "pq.ParquetFile":
    """Random access to a shard without reading all of it: a memory map locally, ranged reads
    on gs://, so only the row groups and columns asked for are fetched."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not storage.exists(name):
        raise StorageError(f"{storage.join(name)}: shard listed in manifest.json is missing")
    if isinstance(storage, LocalStorage):
        return pq.ParquetFile(pa.memory_map(storage.join(name)))
    return pq.ParquetFile(pa.PythonFile(storage.open_read(name), mode="r"))
