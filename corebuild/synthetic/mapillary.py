"""The synthetic world in the Mapillary API v4 wire format.

- `GET /mapillary/images?bbox=minlon,minlat,maxlon,maxlat&fields=...&limit=...`: the Graph API
  image search. Needs `Authorization: OAuth <token>` (any non-empty token), else 401 with
  Graph's OAuthException body. Every panorama of the world inside the bbox is an image: one
  sequence per road (`SEQ<seed>R<road>`), `compass_angle` the direction of travel along the
  road. Like the real API, `geometry`/`compass_angle` are the raw (slightly off) camera values
  and `computed_geometry`/`computed_compass_angle` the corrected ones, `creator` the uploader
  (`{"username", "id"}`, one per sequence), and only the requested `fields` (plus `id`) come back.
- `GET /mapillary/thumb/{image_id}.jpg`: the thumbnail (1024x768, fov 90, facing the
  computed compass angle), 404 for unknown ids.

`corebuild.stages.fetch.mapillary.Mapillary` talks to it with base_url `<server>/mapillary`.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import shapely
from aiohttp import web
from shapely.geometry import Point, Polygon

from corebuild.synthetic.render import Camera, encode, render_street
from corebuild.synthetic.world import PANO_STEP_M, Pano, Road, World

THUMB_SIZE = (1024, 768)
THUMB_FOV = 90.0
MAX_LIMIT = 2000
MAX_BBOX_DEG2 = 0.01  # the real API refuses bboxes larger than this
RAW_GPS_OFFSET_M = 2.0  # raw `geometry` is this far off the computed position (consumer GPS)
RAW_COMPASS_OFFSET_DEG = 6.0


def _error(status: int, message: str, kind: str, code: int) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": code}}, status=status)


def sequence_id(world: World, road_id: int) -> str:
    return f"SEQ{world.seed}R{road_id}"


def creator(world: World, road_id: int) -> dict[str, str]:
    """The uploader of a road's sequence, as the Graph API's `creator` field gives it."""
    return {"username": f"synthetic-camera-{world.seed}-{road_id}", "id": str(10**9 + world.seed * 10**4 + road_id)}


def compass_angle(road: Road, along: float) -> float:
    """Direction of travel along the road at `along` metres, degrees clockwise from north."""
    length = road.line.length
    a = road.line.interpolate(max(0.0, min(along, length) - 0.5))
    b = road.line.interpolate(min(length, max(along, 0.0) + 0.5))
    return math.degrees(math.atan2(b.x - a.x, b.y - a.y)) % 360


def captured_at_ms(date: str) -> int:
    """Epoch ms for a 'YYYY-MM' date: mid-month, so no time zone moves it to another month."""
    year, month = (int(v) for v in date.split("-")[:2])
    return int(datetime(year, month, 15, 12, tzinfo=timezone.utc).timestamp() * 1000)


def pano_along(pano: Pano) -> float:
    """Where along its road a panorama was taken (its id ends in K<index>)."""
    return int(pano.id.rsplit("K", 1)[1]) * PANO_STEP_M


def _max_k(road: Road) -> int:
    # The last pano index World.pano accepts for this road.
    return int(math.floor((road.line.length + PANO_STEP_M / 2) / PANO_STEP_M))


class MapillaryApi:
    def __init__(self, world: World):
        self.world = world
        self.requests = {"images": 0, "thumb": 0}

    def _road(self, road_id: int) -> Road:
        return next(r for r in self.world.roads if r.id == road_id)

    def panos_in_bbox(self, min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> list[tuple[Pano, float]]:
        """(pano, compass angle) for every panorama inside the bbox, by road then position."""
        w = self.world
        corners = [w.to_local(lat, lon) for lon, lat in ((min_lon, min_lat), (max_lon, min_lat), (max_lon, max_lat), (min_lon, max_lat))]
        area = Polygon(corners).buffer(1.0)  # the bbox is not a rectangle in the local frame
        out: list[tuple[Pano, float]] = []
        for i in sorted(int(j) for j in w._road_tree.query(area, predicate="intersects")):
            road = w.roads[i]
            inside = road.line.intersection(area)
            alongs = [road.line.project(Point(c)) for c in shapely.get_coordinates(inside)]
            if not alongs:
                continue
            k0 = max(0, int(math.floor(min(alongs) / PANO_STEP_M)))
            k1 = min(_max_k(road), int(math.ceil(max(alongs) / PANO_STEP_M)))
            for k in range(k0, k1 + 1):
                pano = w._pano_at(road, k)
                if min_lat <= pano.lat <= max_lat and min_lon <= pano.lon <= max_lon:
                    out.append((pano, compass_angle(road, k * PANO_STEP_M)))
        return out

    def _raw_lonlat(self, pano: Pano, heading: float) -> tuple[float, float]:
        # Raw GPS a couple of metres to the camera's right, so a client using `geometry` instead
        # of `computed_geometry` is visibly (and testably) off.
        h = math.radians(heading)
        lat, lon = self.world.to_latlon(pano.x + math.cos(h) * RAW_GPS_OFFSET_M, pano.y - math.sin(h) * RAW_GPS_OFFSET_M)
        return lon, lat

    def _image_doc(self, pano: Pano, heading: float, fields: set[str], thumb_base: str) -> dict[str, Any]:
        raw_lon, raw_lat = self._raw_lonlat(pano, heading)
        full: dict[str, Any] = {
            "id": pano.id,
            "geometry": {"type": "Point", "coordinates": [raw_lon, raw_lat]},
            "computed_geometry": {"type": "Point", "coordinates": [pano.lon, pano.lat]},
            "compass_angle": round((heading + RAW_COMPASS_OFFSET_DEG) % 360, 3),
            "computed_compass_angle": round(heading, 3),
            "captured_at": captured_at_ms(pano.date),
            "sequence": sequence_id(self.world, pano.road_id),
            "creator": creator(self.world, pano.road_id),
            "is_pano": False,
            "width": THUMB_SIZE[0],
            "height": THUMB_SIZE[1],
        }
        thumb = f"{thumb_base}/mapillary/thumb/{pano.id}.jpg"
        for name in ("thumb_256_url", "thumb_1024_url", "thumb_2048_url", "thumb_original_url"):
            full[name] = thumb
        return {k: v for k, v in full.items() if k == "id" or k in fields}

    async def images(self, request: web.Request) -> web.Response:
        self.requests["images"] += 1
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "oauth" or not token.strip():
            return _error(401, "An active access token must be used to query information about the current user.", "OAuthException", 190)
        q = request.query
        try:
            min_lon, min_lat, max_lon, max_lat = (float(v) for v in q["bbox"].split(","))
        except (KeyError, ValueError):
            return _error(400, "Invalid parameter: bbox must be minLon,minLat,maxLon,maxLat", "GraphMethodException", 100)
        if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
            return _error(400, "Invalid parameter: bbox is empty or out of range", "GraphMethodException", 100)
        if (max_lon - min_lon) * (max_lat - min_lat) > MAX_BBOX_DEG2:
            return _error(400, f"Invalid parameter: bbox must be smaller than {MAX_BBOX_DEG2} square degrees", "GraphMethodException", 100)
        try:
            limit = int(q.get("limit", str(MAX_LIMIT)))
        except ValueError:
            return _error(400, "Invalid parameter: limit must be an integer", "GraphMethodException", 100)
        limit = max(1, min(limit, MAX_LIMIT))
        fields = {f.strip() for f in q.get("fields", "id").split(",") if f.strip()}
        base = str(request.url.origin())
        found = self.panos_in_bbox(min_lon, min_lat, max_lon, max_lat)[:limit]
        return web.json_response({"data": [self._image_doc(p, h, fields, base) for p, h in found]})

    async def thumb(self, request: web.Request) -> web.Response:
        self.requests["thumb"] += 1
        pano = self.world.pano(request.match_info["image_id"])
        if pano is None:
            return web.Response(status=404, text="Not Found")
        heading = compass_angle(self._road(pano.road_id), pano_along(pano))
        cam = Camera(pano.x, pano.y, heading, THUMB_FOV, 0.0, *THUMB_SIZE)
        return web.Response(body=encode(render_street(self.world, cam), "jpeg"), content_type="image/jpeg")


def add_mapillary_routes(app: web.Application, world: World) -> None:
    api = MapillaryApi(world)
    app.router.add_get("/mapillary/images", api.images)
    app.router.add_get("/mapillary/thumb/{image_id}.jpg", api.thumb)
