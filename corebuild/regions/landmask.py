"""Land/sea lookups on the GLOBE 30-arc-second mask shipped in the global-land-mask wheel.

Importing `global_land_mask.globe` decompresses its 933 MB boolean raster (~6 s, ~1 GB of
RAM) in every process. Here the raster is bit-packed once (117 MB), cached as .npy, and
memory-mapped afterwards, with the package's own index arithmetic, so answers are identical.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np


def _npz_path() -> Path:
    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("global-land-mask is not installed (pip install global-land-mask)")
    return Path(list(spec.submodule_search_locations)[0]) / "globe_combined_mask_compressed.npz"


def cache_dir() -> Path:
    return Path(os.environ.get("COREBUILD_CACHE_DIR") or Path.home() / ".cache" / "corebuild")


class LandMask:
    def __init__(self, cache: Path | None = None):
        npz = _npz_path()
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()[:16]
        path = (cache or cache_dir()) / f"globe-land-{digest}.npy"
        with np.load(npz) as data:
            self._lat, self._lon = data["lat"], data["lon"]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                packed = np.packbits(~data["mask"], axis=1)  # the raster marks ocean
                tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
                with open(tmp, "wb") as fh:  # a file object: np.save adds no suffix
                    np.save(fh, packed)
                os.replace(tmp, path)  # atomic: concurrent workers never read half a file
        self._bits = np.load(path, mmap_mode="r")

    def is_land(self, lat, lon) -> np.ndarray:
        lat = np.clip(np.asarray(lat, dtype=float), self._lat.min(), self._lat.max())
        lon = np.clip(np.asarray(lon, dtype=float), self._lon.min(), self._lon.max())
        i = ((lat - self._lat[0]) / (self._lat[1] - self._lat[0])).astype(int)
        j = ((lon - self._lon[0]) / (self._lon[1] - self._lon[0])).astype(int)
        return ((self._bits[i, j >> 3] >> (7 - (j & 7))) & 1).astype(bool)


@lru_cache(maxsize=1)
def land_mask() -> LandMask:
    return LandMask()


def is_land(lat, lon) -> np.ndarray:
    return land_mask().is_land(lat, lon)
