"""Local metric projections (pyproj) and small geodesy helpers."""

from __future__ import annotations

import math
from functools import lru_cache

from pyproj import Geod, Transformer

WGS84_GEOD = Geod(ellps="WGS84")
# Web Mercator ground resolution at the equator for 256-px tiles at zoom 0, metres per pixel.
MERCATOR_EQUATOR_M_PER_PX = 2 * math.pi * 6378137.0 / 256


def projection(proj: str, lat0: float, lon0: float) -> str:
    return f"+proj={proj} +lat_0={lat0} +lon_0={lon0} +ellps=WGS84"


@lru_cache(maxsize=512)
def _transformers(proj: str, lat0: float, lon0: float) -> tuple[Transformer, Transformer]:
    # PROJ pipelines skip the CRS database: ~0.3 ms to build instead of ~17 ms, same numbers.
    step = projection(proj, lat0, lon0)
    fwd = Transformer.from_pipeline(f"+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad +step {step}")
    inv = Transformer.from_pipeline(f"+proj=pipeline +step +inv {step} +step +proj=unitconvert +xy_in=rad +xy_out=deg")
    return fwd, inv


def local_to_webmercator(proj: str, lat0: float, lon0: float) -> Transformer:
    """Local projected metres -> Web Mercator (EPSG:3857) metres."""
    return Transformer.from_pipeline(f"+proj=pipeline +step +inv {projection(proj, round(lat0, 6), round(lon0, 6))} +step +proj=webmerc +ellps=WGS84")


def equal_area(lat0: float, lon0: float) -> tuple[Transformer, Transformer]:
    """Lambert azimuthal equal-area centred on (lat0, lon0): (lon,lat)->(x,y) and back."""
    return _transformers("laea", round(lat0, 6), round(lon0, 6))


def equidistant(lat0: float, lon0: float) -> tuple[Transformer, Transformer]:
    """Azimuthal equidistant centred on (lat0, lon0): true distances from the centre."""
    return _transformers("aeqd", round(lat0, 6), round(lon0, 6))


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    _, _, d = WGS84_GEOD.inv(lon1, lat1, lon2, lat2)
    return float(d)


def mercator_gsd(lat: float, zoom: int, tile_size: int = 256) -> float:
    """Ground metres per pixel of a Web Mercator tile pyramid at this latitude and zoom."""
    return MERCATOR_EQUATOR_M_PER_PX * (256 / tile_size) * math.cos(math.radians(lat)) / (2**zoom)
