"""A content-addressed response cache over any `Storage` (local directory or gs://).

Layout under the storage root:
  blobs/<h[:2]>/<h>   the body, h = sha256(body); identical bodies are stored once
  refs/<k[:2]>/<k>    k = sha256(key); content is h

Keys are hashed, so the cache never stores a key in clear (HttpClient's keys are redacted URLs
anyway). A blob is written before its ref, so a ref never points at a blob not yet written;
every hit is re-hashed, so a damaged blob is a miss, never wrong bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
from typing import Any, Optional

from corebuild.shards.storage import Storage, open_storage

log = logging.getLogger("corebuild.shards.cache")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_name(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest}"


def ref_name(key: str) -> str:
    k = _sha256(key.encode("utf-8"))
    return f"refs/{k[:2]}/{k}"


class ContentCache:
    """Implements corebuild.stages.fetch.http.ResponseCache.

    Counters (per instance): `hits`, `misses`, and `writes` = bodies actually stored
    (a put whose body is already present writes only the small ref and is not counted).
    StorageError from the storage itself (permission denied, missing bucket) propagates: a
    misconfigured cache should stop the build rather than silently refetch everything.
    """

    def __init__(self, storage: Storage):
        self.storage = storage
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._lock = threading.Lock()  # counters are bumped from worker threads

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ContentCache({self.storage.url!r})"

    @property
    def url(self) -> str:
        return self.storage.url

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def get_sync(self, key: str) -> Optional[bytes]:
        ref = ref_name(key)
        raw = self.storage.read(ref)
        if raw is None:
            self._count("misses")
            return None
        digest = raw.decode("ascii", errors="replace").strip()
        if not _HEX64.match(digest):
            log.warning("cache %s: ref %s is damaged (not a sha256); treating %s as a miss", self.url, ref, key)
            self._count("misses")
            return None
        name = blob_name(digest)
        body = self.storage.read(name)
        if body is None:
            log.warning("cache %s: blob %s named by %s is missing; treating %s as a miss", self.url, name, ref, key)
            self._count("misses")
            return None
        if _sha256(body) != digest:
            log.warning("cache %s: blob %s does not match its sha256; treating %s as a miss and removing it", self.url, name, key)
            # put() skips blobs that exist, so a damaged one must go for the next put to repair it.
            self.storage.delete(name)
            self._count("misses")
            return None
        self._count("hits")
        return body

    def put_sync(self, key: str, body: bytes) -> None:
        digest = _sha256(body)
        name = blob_name(digest)
        if not self.storage.exists(name):
            self.storage.write(name, body)
            self._count("writes")
        self.storage.write(ref_name(key), digest.encode("ascii"))

    async def get(self, key: str) -> Optional[bytes]:
        return await asyncio.to_thread(self.get_sync, key)

    async def put(self, key: str, body: bytes) -> None:
        await asyncio.to_thread(self.put_sync, key, body)


def open_cache(url: Optional[str]) -> Optional[ContentCache]:
    """A ContentCache at `url` (a path, file:// or gs://), or None for no cache."""
    if not url:
        return None
    return ContentCache(open_storage(url))
