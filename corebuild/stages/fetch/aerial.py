"""XYZ tile client: a north-up crop centred on a point, stitched from exactly the tiles it needs."""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass
from typing import Optional

import mercantile
from PIL import Image

from corebuild.errors import ConfigError, StageError
from corebuild.options import option
from corebuild.geo import mercator_gsd
from corebuild.licenses import BING_TOS, ESRI_TOS, MAPBOX_TOS, NOASSERTION, ODBL
from corebuild.record import AerialCrop
from corebuild.secrets import resolve_secret
from corebuild.stages.fetch.blank import is_placeholder, is_uniform
from corebuild.stages.fetch.http import HttpClient, image_validator

_WORLD_M = 2 * math.pi * 6378137.0  # Web Mercator world width in metres


@dataclass(frozen=True)
class AerialConfig:
    # {z} {x} {y}, optional {s} (subdomain), {q} (quadkey), {-y} (TMS row), {key} (secret from
    # api_key_env, substituted on the worker, redacted in messages)
    url_template: str = option("", flag="--aerial-url", help="XYZ tile URL template, e.g. https://host/{z}/{x}/{y}.png")
    zoom: int = 20
    size: int = 512  # crop width = height, pixels
    tile_size: int = 256  # 256, or 512 for @2x sources
    subdomains: tuple[str, ...] = ()
    image_format: str = "jpeg"  # encoding of the stitched crop
    attribution: Optional[str] = None
    # The imagery's licence (corebuild.licenses), recorded per row; each preset states its own.
    # Not hashed: it follows from the source, it chooses no tile.
    license: str = option(NOASSERTION.id, flag="--aerial-license", metavar="SPDX", hashed=False, help="licence of the --aerial-url imagery, an SPDX id or LicenseRef-...")
    api_key_env: Optional[str] = option(None, flag="--aerial-key-env", help="env var holding the key for {key} in --aerial-url")
    max_zoom: int = 22
    # sha256 of tiles a source serves where it has no imagery ("map data not yet available")
    placeholder_sha256: tuple[str, ...] = ()
    # a crop fails as `aerial.no_imagery` when at least this share of its tiles is blank
    max_blank_share: float = 0.5
    provider_name: str = "xyz"


# Named sources. Each still needs the user's right to use it; keys come from the environment.
AERIAL_PRESETS: dict[str, AerialConfig] = {
    "esri_world_imagery": AerialConfig(
        url_template="https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}",
        attribution="Esri, Maxar, Earthstar Geographics, and the GIS User Community",
        license=ESRI_TOS.id,
        max_zoom=19,
        zoom=19,
        provider_name="esri_world_imagery",
    ),
    "bing_aerial": AerialConfig(
        url_template="https://ecn.t{s}.tiles.virtualearth.net/tiles/a{q}.jpeg?g=1&key={key}",
        subdomains=("0", "1", "2", "3"),
        attribution="© Microsoft (Bing Maps)",
        license=BING_TOS.id,
        api_key_env="BING_MAPS_KEY",
        max_zoom=20,
        provider_name="bing_aerial",
    ),
    "mapbox_satellite": AerialConfig(
        url_template="https://api.mapbox.com/v4/mapbox.satellite/{z}/{x}/{y}@2x.jpg90?access_token={key}",
        tile_size=512,
        attribution="© Mapbox © Maxar",
        license=MAPBOX_TOS.id,
        api_key_env="MAPBOX_ACCESS_TOKEN",
        max_zoom=22,
        provider_name="mapbox_satellite",
    ),
    "osm": AerialConfig(
        url_template="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        attribution="© OpenStreetMap contributors",
        license=ODBL.id,
        max_zoom=19,
        zoom=19,
        image_format="png",
        provider_name="osm",
        max_blank_share=2.0,  # flat map tiles (water, parks) are real answers, not "no imagery"
    ),
}


@dataclass(frozen=True)
class CropPlan:
    zoom: int
    origin_px: tuple[int, int]  # global pixel of the crop's top-left corner
    size: int
    tiles: tuple[mercantile.Tile, ...]
    offsets: tuple[tuple[int, int], ...]  # where each tile's top-left lands in the crop
    west: float
    south: float
    east: float
    north: float
    center_lat: float
    center_lon: float


def _global_px(lon: float, lat: float, zoom: int, tile_size: int) -> tuple[float, float]:
    mx, my = mercantile.xy(lon, lat)
    res = _WORLD_M / (tile_size * 2**zoom)
    return (mx + _WORLD_M / 2) / res, (_WORLD_M / 2 - my) / res


def _lnglat_of_px(px: float, py: float, zoom: int, tile_size: int) -> tuple[float, float]:
    res = _WORLD_M / (tile_size * 2**zoom)
    ll = mercantile.lnglat(px * res - _WORLD_M / 2, _WORLD_M / 2 - py * res)
    return ll.lng, ll.lat


def plan_crop(lat: float, lon: float, zoom: int, size: int, tile_size: int = 256) -> CropPlan:
    """Which tiles a `size`-px crop centred on (lat, lon) needs, and its bounds.

    The crop is pixel-aligned, so its true centre is within half a pixel of the point; the true
    centre is what gets recorded.
    """
    px, py = _global_px(lon, lat, zoom, tile_size)
    ox, oy = int(round(px - size / 2)), int(round(py - size / 2))
    n = 2**zoom
    ty0, ty1 = max(0, oy // tile_size), min(n - 1, (oy + size - 1) // tile_size)
    cells = [(tx, ty) for ty in range(ty0, ty1 + 1) for tx in range(ox // tile_size, (ox + size - 1) // tile_size + 1)]
    tiles = tuple(mercantile.Tile(tx % n, ty, zoom) for tx, ty in cells)  # x wraps at the antimeridian
    offsets = tuple((tx * tile_size - ox, ty * tile_size - oy) for tx, ty in cells)
    west, north = _lnglat_of_px(ox, oy, zoom, tile_size)
    east, south = _lnglat_of_px(ox + size, oy + size, zoom, tile_size)
    clon, clat = _lnglat_of_px(ox + size / 2, oy + size / 2, zoom, tile_size)
    return CropPlan(zoom, (ox, oy), size, tiles, offsets, west, south, east, north, clat, clon)


def tile_url(template: str, tile: mercantile.Tile, subdomains: tuple[str, ...] = (), key: str = "") -> str:
    url = template.replace("{z}", str(tile.z)).replace("{x}", str(tile.x)).replace("{y}", str(tile.y)).replace("{key}", key)
    url = url.replace("{-y}", str(2**tile.z - 1 - tile.y)).replace("{q}", mercantile.quadkey(tile))
    if "{s}" in url:
        if not subdomains:
            raise StageError("aerial.config", "tile template has {s} but no subdomains are configured")
        url = url.replace("{s}", subdomains[(tile.x + tile.y) % len(subdomains)])
    return url


class XYZTiles:

    def __init__(self, http: HttpClient, cfg: AerialConfig, key: str = "", stage: str = "aerial"):
        if not cfg.url_template:
            raise ConfigError(f"{stage}: no tile URL template configured (--{stage}-url or --{stage}-preset)")
        if "{key}" in cfg.url_template and not key:
            raise ConfigError(f"{stage}: the tile template needs {{key}} but no api_key_env is set")
        if cfg.zoom > cfg.max_zoom:
            raise ConfigError(f"{stage}: zoom {cfg.zoom} is beyond this source's maximum {cfg.max_zoom}")
        self.http, self.cfg, self._key, self.stage = http, cfg, key, stage
        self.name = cfg.provider_name
        self.license = cfg.license

    async def _tile(self, tile: mercantile.Tile) -> tuple[Image.Image, bool]:
        """The tile and whether it is blank ("no imagery")."""
        where = f"tile {tile.z}/{tile.x}/{tile.y}"
        limits = self.http.cfg.image_limits
        res = await self.http.get(
            tile_url(self.cfg.url_template, tile, self.cfg.subdomains, self._key),
            {},
            self.stage,
            max_image_bytes=limits.max_bytes,
            validate=image_validator(self.stage, where, limits),
        )
        if res.status != 200:
            raise StageError(f"{self.stage}.http_{res.status}", f"{where} answered HTTP {res.status}")
        img = res.value
        if img.size != (self.cfg.tile_size, self.cfg.tile_size):
            raise StageError(f"{self.stage}.bad_image", f"{where} is {img.size}, expected {self.cfg.tile_size} px")
        blank = is_placeholder(res.body, self.cfg.placeholder_sha256) or is_uniform(img)
        return img.convert("RGB"), blank

    async def crop(self, lat: float, lon: float) -> AerialCrop:
        c = self.cfg
        plan = plan_crop(lat, lon, c.zoom, c.size, c.tile_size)
        fetched = await asyncio.gather(*(self._tile(t) for t in plan.tiles))
        blank = sum(b for _, b in fetched)
        if blank and blank >= c.max_blank_share * len(fetched):
            raise StageError(f"{self.stage}.no_imagery", f"{blank} of {len(fetched)} tiles at zoom {c.zoom} are blank or placeholders")
        images = [img for img, _ in fetched]
        canvas = Image.new("RGB", (c.size, c.size))
        for offset, img in zip(plan.offsets, images):
            canvas.paste(img, offset)
        buf = io.BytesIO()
        if c.image_format == "png":
            canvas.save(buf, "PNG", compress_level=3)
        else:
            canvas.save(buf, "JPEG", quality=90)
        return AerialCrop(
            provider=self.name,
            zoom=c.zoom,
            width=c.size,
            height=c.size,
            west=plan.west,
            south=plan.south,
            east=plan.east,
            north=plan.north,
            center_lat=plan.center_lat,
            center_lon=plan.center_lon,
            gsd_m=round(mercator_gsd(plan.center_lat, c.zoom, c.tile_size), 5),
            tiles=len(plan.tiles),
            blank_tiles=blank,
            image=buf.getvalue(),
            image_format="png" if c.image_format == "png" else "jpeg",
            attribution=c.attribution,
            license=c.license,
        )


def xyz_tiles(acfg: AerialConfig, http: HttpClient, stage: str, secret_name: str = "") -> XYZTiles:
    key = resolve_secret(acfg.api_key_env, f"{stage} tiles ({acfg.provider_name})", secret_name) if acfg.api_key_env else ""
    return XYZTiles(http, acfg, key, stage)


def from_config(cfg, http: HttpClient) -> XYZTiles:
    """The `xyz` aerial provider of a FetchConfig (the map crop uses xyz_tiles with its own config)."""
    return xyz_tiles(cfg.aerial, http, "aerial", cfg.secret_name(cfg.aerial.api_key_env or ""))
