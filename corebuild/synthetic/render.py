"""Render the synthetic world: street-level views (pinhole camera) and top-down XYZ tiles.

Both come from the same geometry, so what a street view shows (a red building with a sign) is
where the aerial crop shows it. Also answers which signs a view shows cleanly (OCR ground truth).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import mercantile
import numpy as np
import shapely
from PIL import Image, ImageDraw
from shapely.geometry import LineString, Point, Polygon, box

from corebuild.synthetic.signs import sign_texture

if TYPE_CHECKING:
    from corebuild.synthetic.world import Building, Sign, World

SKY_TOP = (110, 160, 225)
SKY_HORIZON = (205, 222, 240)
GROUND = (148, 158, 118)
SIDEWALK = (176, 174, 168)
ASPHALT = (78, 80, 84)
MARKING = (238, 238, 232)
GRASS = (92, 150, 66)
WATER = (60, 110, 170)
TREE = (48, 112, 44)
TRUNK = (92, 64, 40)
EYE_HEIGHT_M = 2.5
FAR_M = 160.0
NEAR_M = 0.5


@lru_cache(maxsize=4)
@dataclass(frozen=True)
class Camera:
    x: float
    y: float
    heading: float  # degrees clockwise from north
    fov: float = 90.0  # horizontal
    pitch: float = 0.0
    width: int = 640
    height: int = 640
    eye: float = EYE_HEIGHT_M

    @property
    def focal(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.fov) / 2)

    @property
    def forward(self) -> tuple[float, float]:
        h = math.radians(self.heading)
        return math.sin(h), math.cos(h)

    @property
    def right(self) -> tuple[float, float]:
        h = math.radians(self.heading)
        return math.cos(h), -math.sin(h)

    def to_camera(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (N,3) -> depth along the optical axis, right, up (camera frame)."""
        fx, fy = self.forward
        rx, ry = self.right
        dx, dy, dz = pts[:, 0] - self.x, pts[:, 1] - self.y, pts[:, 2] - self.eye
        fwd = dx * fx + dy * fy
        rgt = dx * rx + dy * ry
        p = math.radians(self.pitch)
        depth = fwd * math.cos(p) + dz * math.sin(p)
        up = dz * math.cos(p) - fwd * math.sin(p)
        return depth, rgt, up

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        depth, rgt, up = self.to_camera(pts)
        d = np.maximum(depth, 0.05)
        u = self.width / 2 + self.focal * rgt / d
        v = self.height / 2 - self.focal * up / d
        return np.column_stack([u, v]), depth

    def frustum(self, far: float = FAR_M) -> Polygon:
        """The ground-plane footprint of what the camera can see, for clipping and queries."""
        fx, fy = self.forward
        rx, ry = self.right
        t = (self.width / 2) / self.focal * 1.05
        pts = []
        for dist, side in ((NEAR_M, -1), (far, -1), (far, 1), (NEAR_M, 1)):
            pts.append((self.x + fx * dist + rx * dist * t * side, self.y + fy * dist + ry * dist * t * side))
        return Polygon(pts)


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(c * factor))) for c in rgb)  # type: ignore[return-value]


def _polygons(geom):
    if geom.is_empty:
        return []
    return list(getattr(geom, "geoms", [geom]))


def _draw_ground(draw: ImageDraw.ImageDraw, cam: Camera, geoms, colour, frustum: Polygon) -> None:
    if not len(geoms):
        return
    # One clip and one projection for the whole layer; each ring's points as before (same pixels).
    polys = [poly for g in _clip(geoms, frustum) for poly in _polygons(g) if isinstance(poly, Polygon)]
    if not polys:
        return
    rings = [np.asarray(poly.exterior.coords) for poly in polys]
    xy = np.concatenate(rings)
    uv, _ = cam.project(np.column_stack([xy, np.zeros(len(xy))]))
    start = 0
    for ring in rings:
        draw.polygon([tuple(p) for p in uv[start: start + len(ring)]], fill=colour)
        start += len(ring)


def _clip(geoms, frustum: Polygon) -> np.ndarray:
    """geoms ∩ frustum, each; those wholly inside it are kept as they are, not clipped (most of a
    view's road dashes and walls: the same shapes, for a cheap prepared test instead of an overlay)."""
    geoms = np.asarray(geoms, dtype=object)
    shapely.prepare(frustum)
    out = geoms.copy()
    cut = ~shapely.contains_properly(frustum, geoms)
    if cut.any():
        out[cut] = shapely.intersection(geoms[cut], frustum)
    return out


def _perspective_coeffs(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """Coefficients for PIL's PERSPECTIVE transform mapping output points `dst` to input `src`."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float)).tolist()


def _sign_corners(sign: "Sign") -> np.ndarray:
    (lx, ly), (rx, ry) = sign.left, sign.right
    return np.array([[lx, ly, sign.z1], [rx, ry, sign.z1], [rx, ry, sign.z0], [lx, ly, sign.z0]], float)


def _draw_sign(img: Image.Image, cam: Camera, sign: "Sign") -> None:
    uv, depth = cam.project(_sign_corners(sign))
    if np.any(depth < 1.0):
        return
    x0, y0 = np.floor(uv.min(axis=0)).astype(int)
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int)
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x1, img.width), min(y1, img.height)
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        return
    tex = sign_texture(sign.text, sign.background, sign.foreground, sign.script)
    tw, th = tex.size
    dst = [(float(u - cx0), float(v - cy0)) for u, v in uv]
    coeffs = _perspective_coeffs(dst, [(0, 0), (tw, 0), (tw, th), (0, th)])
    size = (cx1 - cx0, cy1 - cy0)
    patch = tex.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
    mask = Image.new("L", tex.size, 255).transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    img.paste(patch, (cx0, cy0), mask)


def _front_walls(cam: Camera, buildings: list) -> list:
    """Per building, its walls facing the camera clipped to the view and projected: a list of
    (uv corners, light, normal). One shapely and one numpy call for the whole view; the same
    arithmetic per wall as one at a time (pixels identical)."""
    cam_pt = (cam.x, cam.y)
    front, owner = [], []
    for k, b in enumerate(buildings):
        for p, q, (nx, ny) in b.walls:
            mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
            if nx * (cam_pt[0] - mx) + ny * (cam_pt[1] - my) > 0:  # else a back face
                front.append((p, q, (nx, ny)))
                owner.append(k)
    out: list[list] = [[] for _ in buildings]
    if not front:
        return out
    segs = _clip(shapely.linestrings([[p, q] for p, q, _ in front]), cam.frustum())
    keep = ~shapely.is_empty(segs) & (shapely.get_type_id(segs) == 1)  # 1: LineString
    if not keep.any():
        return out
    coords, index = shapely.get_coordinates(segs[keep], return_index=True)
    ends = np.flatnonzero(np.diff(np.append(index, -1)))  # each segment's last coordinate
    starts = np.concatenate([[0], ends[:-1] + 1])
    a, e = coords[starts], coords[ends]
    kept = np.flatnonzero(keep)
    heights = np.array([buildings[owner[j]].height for j in kept], float)
    quads = np.zeros((len(a), 4, 3))
    quads[:, 0, :2], quads[:, 1, :2], quads[:, 2, :2], quads[:, 3, :2] = a, e, e, a
    quads[:, 2, 2] = quads[:, 3, 2] = heights
    uvs, _ = cam.project(quads.reshape(-1, 3))
    for i, j in enumerate(kept):
        nx, ny = front[j][2]
        light = 1.0 - 0.12 * abs(nx) - (0.18 if ny > 0.5 else 0.0)
        out[owner[j]].append((uvs[4 * i: 4 * i + 4], light, (nx, ny)))
    return out


def _draw_building(img, draw, cam: Camera, b: "Building", walls: list) -> None:
    for uv, light, _ in walls:
        draw.polygon([tuple(p) for p in uv], fill=_shade(b.facade_rgb, light))
        draw.line([tuple(uv[2]), tuple(uv[3])], fill=_shade(b.facade_rgb, light * 0.6), width=2)
    if b.sign is not None and any(abs(n[0] - b.sign.normal[0]) + abs(n[1] - b.sign.normal[1]) < 1e-6 for *_, n in walls):
        _draw_sign(img, cam, b.sign)


def _draw_tree(draw, cam: Camera, t, uv: np.ndarray, depth: np.ndarray) -> None:
    """`uv`, `depth`: the tree's foot and crown centre projected (all trees of a view in one call)."""
    if depth[1] < 1.0:
        return
    r_px = cam.focal * t.crown_r / depth[1]
    trunk_px = max(1.0, cam.focal * 0.18 / depth[1])
    (u0, v0), (u1, v1) = uv
    draw.rectangle([u0 - trunk_px, v1, u0 + trunk_px, v0], fill=TRUNK)
    draw.ellipse([u1 - r_px, v1 - r_px * 1.1, u1 + r_px, v1 + r_px * 0.9], fill=TREE)


@lru_cache(maxsize=16)
def _sky_and_ground(width: int, height: int, horizon: float) -> Image.Image:
    """The empty view (sky gradient above the horizon, ground below): the same for every camera
    of one size and pitch, drawn once."""
    img = Image.new("RGB", (width, height), SKY_HORIZON)
    draw = ImageDraw.Draw(img)
    top = int(max(0, min(height, horizon)))
    for v in range(top):
        t = v / max(1, horizon)
        draw.line([(0, v), (width, v)], fill=tuple(int(a + (b - a) * t) for a, b in zip(SKY_TOP, SKY_HORIZON)))
    draw.rectangle([0, top, width, height], fill=GROUND)
    return img


def render_street(world: "World", cam: Camera) -> Image.Image:
    img = _sky_and_ground(cam.width, cam.height, cam.height / 2 + cam.focal * math.tan(math.radians(cam.pitch))).copy()
    draw = ImageDraw.Draw(img)

    frustum = cam.frustum()
    _draw_ground(draw, cam, _seen(world.walk_polygons, frustum), SIDEWALK, frustum)
    _draw_ground(draw, cam, _seen(world.parks, frustum), GRASS, frustum)
    if world.lake is not None:
        _draw_ground(draw, cam, [world.lake], WATER, frustum)
    _draw_ground(draw, cam, _seen(world.road_polygons, frustum), ASPHALT, frustum)
    dashes = [world.road_dashes[int(i)] for i in world.dash_tree.query(frustum)]
    _draw_ground(draw, cam, dashes, MARKING, frustum)

    objects = []
    buildings = [world.buildings[int(i)] for i in world.building_tree.query(frustum)]
    for k, d in enumerate(shapely.distance([b.footprint for b in buildings], Point(cam.x, cam.y)) if buildings else ()):
        objects.append((float(d), "b", k))
    walls = _front_walls(cam, buildings)
    trees = [world.trees[int(i)] for i in world.tree_tree.query(frustum)]
    for k, t in enumerate(trees):
        objects.append((math.hypot(t.x - cam.x, t.y - cam.y), "t", k))
    if trees:
        tree_uv, tree_depth = cam.project(np.array([[p for t in trees for p in ((t.x, t.y, 0.0), (t.x, t.y, t.height - t.crown_r))]], float).reshape(-1, 3))
    objects.sort(key=lambda o: -o[0])  # painter's algorithm: far to near
    for _, kind, obj in objects:
        if kind == "b":
            _draw_building(img, draw, cam, buildings[obj], walls[obj])
        else:
            _draw_tree(draw, cam, trees[obj], tree_uv[2 * obj: 2 * obj + 2], tree_depth[2 * obj: 2 * obj + 2])
    return img


def _seen(geoms: list, frustum: Polygon) -> list:
    """The geometries that meet the view's footprint, in their order (one vectorised test)."""
    if not geoms:
        return []
    return [g for g, hit in zip(geoms, shapely.intersects(geoms, frustum)) if hit]


def clean_signs(world: "World", cam: Camera, max_distance_m: float = 45.0, min_char_px: float = 10.0) -> list["Sign"]:
    """Signs a view shows whole, facing the camera, unoccluded and large enough to read.

    This is the OCR ground truth: what a good OCR engine should read from this view. Each sign's
    `text` is the exact string its texture draws (NFC; in logical order for right-to-left scripts)
    and its `script` the world's sign script.
    """
    out = []
    frustum = cam.frustum(max_distance_m)
    for i in world.building_tree.query(frustum):
        b = world.buildings[int(i)]
        s = b.sign
        if s is None:
            continue
        cx, cy, _ = s.center
        dist = math.hypot(cx - cam.x, cy - cam.y)
        if dist > max_distance_m or dist < 2.0:
            continue
        if (s.normal[0] * (cam.x - cx) + s.normal[1] * (cam.y - cy)) / dist < 0.5:
            continue  # seen at more than 60 degrees off its face
        corners = _sign_corners(s)
        uv, depth = cam.project(corners)
        if np.any(depth < 1.0) or uv[:, 0].min() < 4 or uv[:, 1].min() < 4:
            continue
        if uv[:, 0].max() > cam.width - 4 or uv[:, 1].max() > cam.height - 4:
            continue
        char_h = cam.focal * (s.z1 - s.z0) * 0.5 / max(depth.mean(), 1e-6)
        char_w = (uv[:, 0].max() - uv[:, 0].min()) / max(1, len(s.text))
        if char_h < min_char_px or char_w < min_char_px * 0.5:
            continue
        if _occluded(world, cam, b, np.vstack([corners, [s.center]])):
            continue
        out.append(s)
    return out


def _occluded(world: "World", cam: Camera, own: "Building", pts: np.ndarray) -> bool:
    for x, y, _ in pts:
        d = math.hypot(x - cam.x, y - cam.y)
        # Stop a little short of the sign so its own wall does not count.
        ex, ey = cam.x + (x - cam.x) * (d - 0.3) / d, cam.y + (y - cam.y) * (d - 0.3) / d
        ray = LineString([(cam.x, cam.y), (ex, ey)])
        for i in world.building_tree.query(ray):
            if world.buildings[int(i)].footprint.intersects(ray):
                return True
        for i in world.tree_tree.query(ray):
            t = world.trees[int(i)]
            if Point(t.x, t.y).buffer(t.crown_r, 8).intersects(ray):
                return True
    return False


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt.lower() in ("jpg", "jpeg"):
        img.save(buf, "JPEG", quality=quality)
    else:
        # zlib level 1: two thirds of level 3's time for 14% more bytes over loopback (same pixels)
        img.save(buf, "PNG", optimize=False, compress_level=1)
    return buf.getvalue()


# Layer styles: (layer, fill, outline) drawn in order. Aerial mimics imagery; map mimics OSM.
def _aerial_style(world: "World"):
    roof = lambda i: world.buildings[i].roof_rgb  # noqa: E731
    return [
        ("parks", lambda i: GRASS, None),
        ("lake", lambda i: WATER, None),
        ("walks", lambda i: SIDEWALK, None),
        ("roads", lambda i: ASPHALT, None),
        ("marks", lambda i: MARKING, None),
        ("buildings", roof, lambda i: _shade(roof(i), 0.6)),
        ("trees", lambda i: TREE, lambda i: _shade(TREE, 0.7)),
    ]


def _map_style(world: "World"):
    return [
        ("parks", lambda i: (200, 250, 204), None),
        ("lake", lambda i: (170, 211, 223), None),
        ("walks", lambda i: (187, 187, 187), None),
        ("roads", lambda i: (255, 255, 255), None),
        ("buildings", lambda i: (217, 208, 201), lambda i: (196, 182, 171)),
    ]


def _draw_tile(world: "World", z: int, x: int, y: int, size: int, style, background) -> Image.Image:
    ss = size * 2  # drawn at 2x and downsampled: anti-aliasing
    left, bottom, right, top = mercantile.xy_bounds(x, y, z)
    scale = ss / (right - left)
    tile_box = box(left, bottom, right, top)
    img = Image.new("RGB", (ss, ss), background)
    draw = ImageDraw.Draw(img)
    layers = world.mercator_layers
    for layer, fill, outline in style:
        geoms, tree = layers[layer]
        for i in tree.query(tile_box):
            g = geoms[int(i)].intersection(tile_box.buffer((right - left) * 0.05))
            for poly in _polygons(g):
                if isinstance(poly, Polygon):
                    xy = [((px - left) * scale, (top - py) * scale) for px, py in poly.exterior.coords]
                    draw.polygon(xy, fill=fill(int(i)), outline=outline(int(i)) if outline else None, width=3 if outline else 0)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def render_tile(world: "World", z: int, x: int, y: int, size: int = 256) -> Image.Image:
    """A north-up Web Mercator tile of the world as imagery. Real imagery is never flat, so a
    fixed per-tile grain is added; a flat tile means "no imagery" to the aerial client."""
    img = _draw_tile(world, z, x, y, size, _aerial_style(world), GROUND)
    rng = np.random.default_rng([world.seed, z, x, y])
    grain = rng.integers(-6, 7, size=(size, size, 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + grain, 0, 255).astype(np.uint8))


def render_map_tile(world: "World", z: int, x: int, y: int, size: int = 256) -> Image.Image:
    """The same world as a cartographic map tile (OSM-like colours)."""
    return _draw_tile(world, z, x, y, size, _map_style(world), (242, 239, 233))
