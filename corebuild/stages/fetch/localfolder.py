"""Street-level images from a local folder of geotagged JPEGs (EXIF GPS), no network.

The folder is indexed once per worker, on the first `locate`: EXIF headers only (no pixel
decoding; what Pillow's decompression-bomb guard refuses to open at all is counted `too_large`
and skipped). Photos are decoded within the configured limits when captured: an oversized one
fails as `street.image_too_large`. The index is persisted as `<root>/.corebuild-index.json`,
keyed by relative path with size and mtime, so other workers and later runs re-read only files
that changed. Nearest neighbour search is a k-d tree over unit vectors on the sphere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

from corebuild.errors import StageError
from corebuild.options import option
from corebuild.geo import distance_m
from corebuild.images import ImageLimits, bomb_warnings
from corebuild.licenses import NOASSERTION
from corebuild.record import StreetCapture, StreetLocation
from corebuild.stages.fetch.http import decode_image

log = logging.getLogger(__name__)

INDEX_NAME = ".corebuild-index.json"
INDEX_VERSION = 1
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
EARTH_RADIUS_M = 6371008.8  # mean radius: the k-d tree's sphere; exact distances use the ellipsoid
NOMINAL_FOV = 90.0  # EXIF rarely gives a usable field of view
GPS_IFD = 0x8825
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
GPS_LATITUDE_REF, GPS_LATITUDE, GPS_LONGITUDE_REF, GPS_LONGITUDE = 1, 2, 3, 4
GPS_IMG_DIRECTION = 17
GPS_DATE_STAMP = 29
_DATE_RE = re.compile(r"^\s*(\d{4})[:\-](\d{2})")


@dataclass(frozen=True)
class LocalFolderConfig:
    root: str = option("", flag="--local-folder", help="folder of geotagged JPEGs for --street-provider local")
    radius_m: float = 50.0
    # What the user says of their photos, recorded on every row (street_license, street_attribution).
    license: str = option(NOASSERTION.id, flag="--local-license", metavar="SPDX", help="licence of the --local-folder photos, an SPDX id (CC-BY-4.0) or LicenseRef-...")
    attribution: Optional[str] = option(None, flag="--local-attribution", help="attribution the --local-folder photos' licence asks for, recorded per row")


@dataclass(frozen=True)
class Photo:
    path: str  # relative to root, '/'-separated
    lat: float
    lon: float
    heading: Optional[float]
    date: Optional[str]


@dataclass
class IndexStats:
    files: int = 0  # JPEGs found
    geotagged: int = 0
    no_gps: int = 0  # skipped: no usable GPS position
    unreadable: int = 0  # skipped: not even the header opens
    too_large: int = 0  # skipped: Pillow's decompression-bomb guard refuses even the header
    read: int = 0  # opened this time (new or changed); the rest came from the saved index
    saved: bool = False


def _ratio(value: Any) -> float:
    # IFDRational, a (num, den) pair, or a plain number; x/0 gives nan (rejected by callers).
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return float(num) / float(den) if float(den) else math.nan
    return float(value)


def _dms(value: Any) -> float:
    parts = value if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"not degrees/minutes/seconds: {value!r}")
    return sum(_ratio(p) / 60**i for i, p in enumerate(parts))


def _month(value: Any) -> Optional[str]:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    m = _DATE_RE.match(value) if isinstance(value, str) else None
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1800:
        return None  # "0000:00:00 00:00:00" is what cameras write when the clock is unset
    return f"{m.group(1)}-{m.group(2)}"


def read_exif(path: Path) -> Optional[dict[str, Any]]:
    """{lat, lon, heading, date} from a JPEG's EXIF, or None without a usable GPS position.
    Raises OSError (or PIL's errors: DecompressionBombError past twice Pillow's MAX_IMAGE_PIXELS)
    when the file does not open as an image. Pixel limits are checked when the photo is captured."""
    with bomb_warnings("ignore"):  # header and EXIF only: no pixels are decoded here
        img = Image.open(path)
    with img:
        exif = img.getexif()
        gps = exif.get_ifd(GPS_IFD)
        if not gps:
            return None
        try:
            lat = _dms(gps[GPS_LATITUDE]) * (-1 if str(gps.get(GPS_LATITUDE_REF, "N")).upper().startswith("S") else 1)
            lon = _dms(gps[GPS_LONGITUDE]) * (-1 if str(gps.get(GPS_LONGITUDE_REF, "E")).upper().startswith("W") else 1)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
        # (0, 0) is what many devices write before a GPS fix, not a photo in the Gulf of Guinea.
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
            return None
        heading: Optional[float] = None
        if GPS_IMG_DIRECTION in gps:
            try:
                h = _ratio(gps[GPS_IMG_DIRECTION])
                heading = h % 360 if math.isfinite(h) else None  # true or magnetic north (ref 16), as recorded
            except (TypeError, ValueError):
                heading = None
        date = _month(exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)) or _month(gps.get(GPS_DATE_STAMP))
        return {"lat": lat, "lon": lon, "heading": heading, "date": date}


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def chord_of(metres: float) -> float:
    """Straight-line distance between two unit vectors `metres` apart on the sphere."""
    return 2 * math.sin(min(math.pi, metres / EARTH_RADIUS_M) / 2)


def metres_of(chord: float) -> float:
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, chord / 2))


class FolderIndex:
    """Geotagged photos under a root, with a k-d tree; built by `build` (blocking)."""

    def __init__(self, root: Path, photos: list[Photo], stats: IndexStats):
        self.root, self.photos, self.stats = root, photos, stats
        self.tree: Optional[cKDTree] = (
            cKDTree(unit_vectors(np.array([p.lat for p in photos]), np.array([p.lon for p in photos]))) if photos else None
        )

    @classmethod
    def build(cls, root: Path) -> "FolderIndex":
        stats = IndexStats()
        index_path = root / INDEX_NAME
        old = _load_index(index_path)
        entries: dict[str, dict[str, Any]] = {}
        for path in _jpegs(root):
            rel = path.relative_to(root).as_posix()
            try:
                st = path.stat()
            except OSError:
                continue  # vanished while walking
            stats.files += 1
            prev = old.get(rel)
            if isinstance(prev, dict) and prev.get("size") == st.st_size and prev.get("mtime_ns") == st.st_mtime_ns:
                entry = prev
            else:
                stats.read += 1
                entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
                try:
                    meta = read_exif(path)
                except Image.DecompressionBombError as exc:
                    log.warning("local images: %s is skipped: %s", rel, exc)
                    entry["too_large"] = True
                except Exception as exc:  # any decoder error: this file is unusable, the folder is not
                    log.debug("local images: %s does not open: %s", rel, exc)
                    entry["unreadable"] = True
                else:
                    entry.update(meta or {"lat": None})
            entries[rel] = entry
        photos = []
        for rel, e in entries.items():
            if e.get("too_large"):
                stats.too_large += 1
            elif e.get("unreadable"):
                stats.unreadable += 1
            elif e.get("lat") is None or e.get("lon") is None:
                stats.no_gps += 1
            else:
                photos.append(Photo(rel, float(e["lat"]), float(e["lon"]), e.get("heading"), e.get("date")))
        stats.geotagged = len(photos)
        if entries != old and root.is_dir():
            stats.saved = _save_index(index_path, entries)
        if stats.no_gps or stats.unreadable or stats.too_large:
            log.info(
                "local images under %s: %d geotagged, %d without GPS, %d unreadable, %d too large (skipped)",
                root, stats.geotagged, stats.no_gps, stats.unreadable, stats.too_large,
            )
        return cls(root, photos, stats)

    def nearest(self, lat: float, lon: float, radius_m: float) -> Optional[tuple[Photo, float]]:
        """The closest photo within radius_m (ellipsoidal distance; ties: lowest path)."""
        if self.tree is None:
            return None
        # The tree's sphere and the ellipsoid disagree by up to ~0.5%: search a little wider,
        # then decide on the exact distance.
        idx = self.tree.query_ball_point(unit_vectors(np.array([lat]), np.array([lon]))[0], chord_of(radius_m * 1.01 + 1.0))
        best: Optional[tuple[float, str, Photo]] = None
        for i in idx:
            p = self.photos[i]
            d = round(distance_m(lat, lon, p.lat, p.lon), 2)
            if d <= radius_m and (best is None or (d, p.path) < best[:2]):
                best = (d, p.path, p)
        return (best[2], best[0]) if best else None


def _jpegs(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix.lower() in JPEG_SUFFIXES)
    return out


def _load_index(path: Path) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION or not isinstance(doc.get("files"), dict):
        return {}  # another version's index: rebuild rather than guess
    return doc["files"]


def _save_index(path: Path, entries: dict[str, dict[str, Any]]) -> bool:
    """Write atomically (temp file + rename): a concurrent worker reads the old or the new
    index, never half of one. False when the folder is read-only (the index stays in memory)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=INDEX_NAME + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": INDEX_VERSION, "files": entries}, f, sort_keys=True)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("local images: cannot save the index %s (%s); keeping it in memory", path, exc.strerror or exc)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


def _read_image(path: Path, rel: str, limits: ImageLimits) -> tuple[bytes, Image.Image]:
    """The file's bytes and its decoded image, within `limits`: a file over max_bytes is not read."""
    what = f"local image {rel}"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limits.max_bytes:
                raise StageError("street.image_too_large", f"{what} is {size:,} bytes, over the limit of {limits.max_bytes:,} bytes (fetch.http.max_image_bytes)")
            body = f.read(limits.max_bytes + 1)  # grown since fstat: still cut off, and refused below
    except OSError as exc:
        raise StageError("street.unreadable", f"{what} cannot be read: {exc.strerror or exc}") from None
    return body, decode_image(body, "street", what, limits)


class LocalFolder:
    """`limits`: the decode limits every provider image gets (FetchConfig.http.image_limits)."""

    name = "local"

    def __init__(self, cfg: LocalFolderConfig, limits: ImageLimits = ImageLimits()):
        self.cfg, self.limits = cfg, limits
        self.root = Path(cfg.root).expanduser()
        self._index: Optional[FolderIndex] = None
        self._lock = asyncio.Lock()

    @property
    def license(self) -> str:
        return self.cfg.license

    async def index(self) -> FolderIndex:
        """The folder's index, built on first use (once per worker, however many callers wait)."""
        if self._index is None:
            async with self._lock:
                if self._index is None:
                    self._index = await asyncio.to_thread(FolderIndex.build, self.root)
        return self._index

    async def locate(self, lat: float, lon: float) -> StreetLocation:
        if not self.cfg.root:
            raise StageError("street.no_local_images", "the local street provider needs fetch.local.root (a folder of geotagged JPEGs)")
        idx = await self.index()
        if not idx.photos:
            s = idx.stats
            why = (
                "does not exist"
                if not self.root.is_dir()
                else f"has no geotagged JPEGs ({s.files} JPEGs, {s.no_gps} without GPS, {s.unreadable} unreadable, {s.too_large} too large)"
            )
            raise StageError("street.no_local_images", f"local image folder {self.root} {why}")
        hit = idx.nearest(lat, lon, self.cfg.radius_m)
        if hit is None:
            raise StageError("street.zero_results", f"no local image within {self.cfg.radius_m:g} m in {self.root}")
        photo, d = hit
        return StreetLocation(
            provider=self.name,
            image_id=photo.path,
            lat=photo.lat,
            lon=photo.lon,
            capture_date=photo.date,
            distance_m=d,
            dedupe_key=photo.path,  # two points snapping to one photo would duplicate a sample
            heading=photo.heading,
            copyright=self.cfg.attribution,
            license=self.license,
        )

    async def capture(self, location: StreetLocation) -> StreetCapture:
        rel = location.image_id
        body, img = await asyncio.to_thread(_read_image, self.root / rel, rel, self.limits)
        return StreetCapture.of_photo(location, body, img.width, img.height, (img.format or "jpeg").lower(), NOMINAL_FOV)


def from_config(cfg, http=None) -> LocalFolder:
    """The `local` provider of a FetchConfig (no HTTP: the folder is on this machine)."""
    return LocalFolder(cfg.local, cfg.http.image_limits)
