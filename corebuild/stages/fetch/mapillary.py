"""Mapillary API v4 client: one bbox search around the point, then the nearest image's thumbnail.

The token travels only in the `Authorization: OAuth <token>` header, never in a URL, so it cannot
reach a cache key, a message or a log. Thumbnails come from the CDN and need no token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from corebuild.errors import StageError
from corebuild.options import option
from corebuild.geo import distance_m
from corebuild.licenses import CC_BY_SA_4
from corebuild.record import StreetCapture, StreetLocation
from corebuild.secrets import resolve_secret
from corebuild.stages.fetch.http import HttpClient, image_validator, json_validator

# Mapillary publishes no field of view for its thumbnails; 90 degrees is a nominal value for a
# perspective camera (for 360-degree images the thumbnail is the whole equirectangular panorama).
NOMINAL_FOV = 90.0
_WGS84_A = 6378137.0
_WGS84_E2 = 6.69437999014e-3


@dataclass(frozen=True)
class MapillaryConfig:
    base_url: str = option("https://graph.mapillary.com", flag="--mapillary-url", empty_is_default=True, help="Mapillary Graph API base URL")
    token_env: str = "MAPILLARY_ACCESS_TOKEN"  # the token itself never enters config or output
    radius_m: float = 50.0
    thumb_field: str = "thumb_1024_url"  # or thumb_256_url / thumb_2048_url / thumb_original_url
    limit: int = 100  # a bbox search is not paged: a denser bbox than this may miss the nearest image (API max 2000)
    # The imagery's licence (corebuild.licenses) and attribution, recorded per row; the attribution
    # gains the image's creator (`creator.username`) when the API gives it. Not hashed: they follow
    # from the provider, they choose no image.
    license: str = option(CC_BY_SA_4.id, hashed=False)
    attribution: str = option("Mapillary, CC BY-SA 4.0", hashed=False)


def bbox_around(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) enclosing a circle of radius_m on the WGS84 ellipsoid."""
    s2 = math.sin(math.radians(lat)) ** 2
    m_per_deg_lat = math.pi / 180 * _WGS84_A * (1 - _WGS84_E2) / (1 - _WGS84_E2 * s2) ** 1.5
    m_per_deg_lon = math.pi / 180 * _WGS84_A * math.cos(math.radians(lat)) / math.sqrt(1 - _WGS84_E2 * s2)
    dlat = radius_m / m_per_deg_lat
    dlon = radius_m / m_per_deg_lon if m_per_deg_lon > 1e-6 else 180.0
    # Clamped, not wrapped: a point within radius_m of the antimeridian misses the far side.
    return (max(-180.0, lon - dlon), max(-90.0, lat - dlat), min(180.0, lon + dlon), min(90.0, lat + dlat))


def month_of_epoch_ms(value: Any) -> Optional[str]:
    """`captured_at` (epoch milliseconds) as 'YYYY-MM' in UTC; None when missing or absurd."""
    try:
        return datetime.fromtimestamp(float(value) / 1000.0, tz=timezone.utc).strftime("%Y-%m")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _point(geom: Any) -> Optional[tuple[float, float]]:
    """(lat, lon) of a GeoJSON Point, or None when it is not one."""
    if not isinstance(geom, dict) or geom.get("type") != "Point":
        return None
    coords = geom.get("coordinates")
    if not isinstance(coords, (list, tuple)) or len(coords) < 2:
        return None
    try:
        lon, lat = float(coords[0]), float(coords[1])
    except (TypeError, ValueError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def _angle(*values: Any) -> Optional[float]:
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v) % 360
    return None


def _id_order(image_id: str) -> tuple[int, int, str]:
    # Mapillary ids are decimal strings: compare them as numbers, anything else as text.
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


class Mapillary:
    name = "mapillary"

    def __init__(self, http: HttpClient, cfg: MapillaryConfig, token: str):
        self.http, self.cfg = http, cfg
        self._token = token

    @property
    def license(self) -> str:
        return self.cfg.license

    def attribution(self, item: dict) -> str:
        """The configured attribution, and the image's creator when the answer names one
        (Graph API: `creator {username, id}`)."""
        creator = item.get("creator")
        username = creator.get("username") if isinstance(creator, dict) else None
        return f"{self.cfg.attribution}, by {username.strip()}" if isinstance(username, str) and username.strip() else self.cfg.attribution

    @property
    def fields(self) -> str:
        return ",".join(
            ("id", "geometry", "computed_geometry", "compass_angle", "computed_compass_angle", "captured_at", "sequence", "creator", self.cfg.thumb_field)
        )

    async def search(self, lat: float, lon: float) -> list[dict]:
        """The raw `data` list of images in the bbox around the point."""
        bbox = bbox_around(lat, lon, self.cfg.radius_m)
        params = {"bbox": ",".join(f"{v:.7f}" for v in bbox), "fields": self.fields, "limit": str(self.cfg.limit)}
        # Not cached: new uploads appear, and the thumbnail URLs in the answer expire.
        res = await self.http.get(
            self.cfg.base_url.rstrip("/") + "/images",
            params,
            "street",
            headers={"Authorization": f"OAuth {self._token}"},
            cacheable=False,
            validate=json_validator("street.bad_metadata", "Mapillary image search answer"),
        )
        if res.status in (401, 403):
            raise StageError(
                "street.unauthorized", f"Mapillary answered HTTP {res.status}: check {self.cfg.token_env} (a valid client access token, MLY|...)"
            )
        if res.status != 200:
            raise StageError(f"street.http_{res.status}", f"Mapillary image search answered HTTP {res.status}")
        doc = res.value
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list):
            raise StageError("street.bad_metadata", "Mapillary image search answer has no 'data' list")
        return data

    async def locate(self, lat: float, lon: float) -> StreetLocation:
        data = await self.search(lat, lon)
        if not data:
            raise StageError("street.zero_results", f"no Mapillary image within {self.cfg.radius_m:g} m")
        best: Optional[tuple[float, tuple[int, int, str], dict, tuple[float, float]]] = None
        usable = 0
        for item in data:
            if not isinstance(item, dict) or item.get("id") is None:
                continue
            where = _point(item.get("computed_geometry")) or _point(item.get("geometry"))
            if where is None:
                continue
            usable += 1
            d = round(distance_m(lat, lon, where[0], where[1]), 2)
            if d > self.cfg.radius_m:
                continue  # the bbox corners reach further than the radius
            key = (d, _id_order(str(item["id"])), item, where)
            if best is None or key[:2] < best[:2]:
                best = key
        if usable == 0:
            raise StageError("street.bad_metadata", "Mapillary image search returned images without id or geometry")
        if best is None:
            raise StageError("street.zero_results", f"no Mapillary image within {self.cfg.radius_m:g} m")
        d, _, item, (plat, plon) = best
        image_id = str(item["id"])
        thumb = item.get(self.cfg.thumb_field)
        if not isinstance(thumb, str) or not thumb:
            raise StageError("street.no_thumbnail", f"Mapillary image {image_id} has no {self.cfg.thumb_field}")
        seq = item.get("sequence")
        sequence = str(seq) if seq not in (None, "") else None
        return StreetLocation(
            provider=self.name,
            image_id=image_id,
            lat=plat,
            lon=plon,
            capture_date=month_of_epoch_ms(item.get("captured_at")),
            distance_m=d,
            # One image per sequence per region (as OSV-5M does): neighbours in a sequence are
            # a few metres apart and would be near-duplicates.
            dedupe_key=sequence or image_id,
            heading=_angle(item.get("computed_compass_angle"), item.get("compass_angle")),
            sequence_id=sequence,
            copyright=self.attribution(item),
            license=self.license,
            image_url=thumb,
        )

    async def capture(self, location: StreetLocation) -> StreetCapture:
        if not location.image_url:
            raise StageError("street.no_thumbnail", f"Mapillary image {location.image_id} has no thumbnail URL")
        # The CDN URL is pre-signed: no Authorization header (the token stays with graph.mapillary.com).
        limits = self.http.cfg.image_limits
        what = f"Mapillary thumbnail of image {location.image_id}"
        res = await self.http.get(
            location.image_url,
            {},
            "street",
            cache_key=f"mapillary:{location.image_id}:{self.cfg.thumb_field}",
            max_image_bytes=limits.max_bytes,
            validate=image_validator("street", what, limits),
        )
        if res.status != 200:
            raise StageError(f"street.http_{res.status}", f"{what} answered HTTP {res.status}")
        img = res.value
        return StreetCapture.of_photo(location, res.body, img.width, img.height, (img.format or "jpeg").lower(), NOMINAL_FOV)


def from_config(cfg, http: HttpClient) -> Mapillary:
    """The `mapillary` provider of a FetchConfig, its token resolved."""
    return Mapillary(http, cfg.mapillary, resolve_secret(cfg.mapillary.token_env, "Mapillary", cfg.secret_name(cfg.mapillary.token_env)))
