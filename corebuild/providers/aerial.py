"""XYZ tile client: a north-up crop centred on a point, stitched from exactly the tiles it needs."""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass
from typing import Optional

import mercantile
from PIL import Image

from ..errors import StageError
from ..geo import mercator_gsd
from ..record import AerialCrop
from .http import HttpClient, decode_image

_WORLD_M = 2 * math.pi * 6378137.0  # Web Mercator world width in metres


@dataclass(frozen=True)
class AerialConfig:
    url_template: str = ""  # {z} {x} {y}, optional {s} (subdomain), {q} (quadkey), {-y} (TMS row)
    zoom: int = 20
    size: int = 512  # crop width = height, pixels
    tile_size: int = 256
    subdomains: tuple[str, ...] = ()
    image_format: str = "jpeg"  # encoding of the stitched crop
    attribution: Optional[str] = None


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


def tile_url(template: str, tile: mercantile.Tile, subdomains: tuple[str, ...] = ()) -> str:
    url = template.replace("{z}", str(tile.z)).replace("{x}", str(tile.x)).replace("{y}", str(tile.y))
    url = url.replace("{-y}", str(2**tile.z - 1 - tile.y)).replace("{q}", mercantile.quadkey(tile))
    if "{s}" in url:
        if not subdomains:
            raise StageError("aerial.config", "tile template has {s} but no subdomains are configured")
        url = url.replace("{s}", subdomains[(tile.x + tile.y) % len(subdomains)])
    return url


class XYZTiles:
    name = "xyz"

    def __init__(self, http: HttpClient, cfg: AerialConfig):
        if not cfg.url_template:
            raise StageError("aerial.config", "no aerial tile URL template configured")
        self.http, self.cfg = http, cfg

    async def _tile(self, tile: mercantile.Tile) -> Image.Image:
        res = await self.http.get(tile_url(self.cfg.url_template, tile, self.cfg.subdomains), {}, "aerial")
        if res.status != 200:
            raise StageError(f"aerial.http_{res.status}", f"tile {tile.z}/{tile.x}/{tile.y} answered HTTP {res.status}")
        img = decode_image(res.body, "aerial", f"tile {tile.z}/{tile.x}/{tile.y}")
        if img.size != (self.cfg.tile_size, self.cfg.tile_size):
            raise StageError("aerial.bad_image", f"tile {tile.z}/{tile.x}/{tile.y} is {img.size}, expected {self.cfg.tile_size} px")
        return img.convert("RGB")

    async def crop(self, lat: float, lon: float) -> AerialCrop:
        c = self.cfg
        plan = plan_crop(lat, lon, c.zoom, c.size, c.tile_size)
        images = await asyncio.gather(*(self._tile(t) for t in plan.tiles))
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
            image=buf.getvalue(),
            image_format="png" if c.image_format == "png" else "jpeg",
            attribution=c.attribution,
        )
