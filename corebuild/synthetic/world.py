"""A seeded synthetic town: roads, a lake, parks, coloured buildings, trees and shop signs whose
text is known (ground truth).

Geometry lives in a local azimuthal-equidistant frame (metres, x east, y north) centred on the
region; the same features are also kept in Web Mercator metres for XYZ tiles, so a street view
and its aerial crop show the same place.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np
import shapely
from shapely import affinity, ops
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon, box
from shapely.strtree import STRtree

from corebuild.geo import equidistant, local_to_webmercator
from corebuild.synthetic.scripts import DEFAULT_SCRIPT, check_script
from corebuild.synthetic.signs import sign_texture_size  # fixes a sign's physical aspect ratio

# Facade colours with plain names; roofs are a darker shade of the same colour, so what a
# pedestrian sees (a red building) also shows from above.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (185, 45, 40),
    "orange": (225, 125, 35),
    "yellow": (230, 200, 60),
    "blue": (45, 85, 185),
    "purple": (120, 55, 150),
    "pink": (225, 130, 175),
    "brown": (125, 80, 45),
    "white": (235, 233, 225),
    "teal": (35, 140, 140),
    "beige": (215, 190, 150),
}
SHOPS = (
    "BAKERY", "PHARMACY", "CAFE", "HOTEL", "BANK", "BOOKS", "MARKET", "FLOWERS", "PIZZA", "SUSHI",
    "TAILOR", "GARAGE", "HOSTEL", "DENTIST", "CINEMA", "BAR", "GYM", "OPTICS", "KEBAB", "DELI",
    "SALON", "TOYS", "SHOES", "MUSIC", "BIKES", "LAUNDRY", "BUTCHER", "GROCERY", "TEA", "DINER",
)
NAMES = (
    "LUNA", "ROMA", "NORD", "OAK", "STAR", "SOL", "ALPHA", "NOVA", "ATLAS", "BLUE", "IRIS",
    "POLO", "RIVA", "MIRA", "ORION", "VEGA", "DELTA", "PIXEL", "LOTUS", "CEDAR", "MAPLE", "ZEN",
    "EMBER", "CORAL", "FALCO", "KAPPA", "OMEGA", "TERRA", "AURA", "BOREAL",
)
# Sign texts in the other scripts mirror the Latin ones: a name and a kind of shop, 30 of each,
# written in the order a shop in that script writes them (the name's pick comes first either way).
SIGN_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {  # script -> (names, shops, "{name} {shop}")
    "latin": (NAMES, SHOPS, "{name} {shop}"),
    "cyrillic": (
        (
            "ЛУНА", "РОМА", "СЕВЕР", "ДУБ", "ЗВЕЗДА", "СОЛНЦЕ", "АЛЬФА", "НОВА", "АТЛАС", "ВОЛНА", "ИРИС",
            "ПОЛЮС", "РИВА", "МИРА", "ОРИОН", "ВЕГА", "ДЕЛЬТА", "ЛОТОС", "КЕДР", "КЛЁН", "ЗАРЯ", "ВЕСНА",
            "РАДУГА", "ВОСТОК", "ОМЕГА", "ТЕРРА", "АВРОРА", "БЕРЁЗКА", "ЯНТАРЬ", "УЮТ",
        ),
        (
            "ПЕКАРНЯ", "АПТЕКА", "КАФЕ", "ГОСТИНИЦА", "БАНК", "КНИГИ", "РЫНОК", "ЦВЕТЫ", "ПИЦЦА", "СУШИ",
            "АТЕЛЬЕ", "АВТОСЕРВИС", "ХОСТЕЛ", "СТОМАТОЛОГИЯ", "КИНО", "БАР", "ФИТНЕС", "ОПТИКА", "ШАУРМА",
            "ГАСТРОНОМ", "САЛОН", "ИГРУШКИ", "ОБУВЬ", "МУЗЫКА", "ВЕЛОСИПЕДЫ", "ПРАЧЕЧНАЯ", "МЯСО", "ПРОДУКТЫ",
            "ЧАЙ", "СТОЛОВАЯ",
        ),
        "{shop} {name}",
    ),
    "arabic": (
        (
            "النور", "القمر", "الشمس", "الأمل", "النجمة", "الواحة", "الريم", "الياسمين", "الزيتون", "الأندلس",
            "السلام", "الفجر", "الهلال", "النخيل", "الوردة", "البحر", "الجبل", "الربيع", "الصفا", "المدينة",
            "الأرز", "اللؤلؤ", "الفيروز", "الغزال", "البركة", "السعادة", "النسيم", "الخليج", "الشام", "الرشيد",
        ),
        (
            "مخبز", "صيدلية", "مقهى", "فندق", "بنك", "مكتبة", "سوق", "زهور", "بيتزا", "سوشي",
            "خياط", "كراج", "نزل", "عيادة أسنان", "سينما", "مطعم", "نادي رياضي", "نظارات", "كباب", "حلويات",
            "صالون", "ألعاب", "أحذية", "موسيقى", "دراجات", "مغسلة", "ملحمة", "بقالة", "شاي", "مشويات",
        ),
        "{shop} {name}",
    ),
    "greek": (
        (
            "ΗΛΙΟΣ", "ΑΣΤΡΟ", "ΟΛΥΜΠΟΣ", "ΑΘΗΝΑ", "ΔΕΛΦΙΝΙ", "ΚΥΜΑ", "ΑΝΘΟΣ", "ΕΛΙΑ", "ΔΑΦΝΗ", "ΙΡΙΣ",
            "ΠΗΓΑΣΟΣ", "ΑΙΓΑΙΟ", "ΝΕΦΕΛΗ", "ΟΡΙΖΩΝ", "ΑΥΡΑ", "ΦΑΡΟΣ", "ΛΙΜΑΝΙ", "ΠΛΑΤΑΝΟΣ", "ΚΕΔΡΟΣ", "ΑΡΓΩ",
            "ΘΑΛΑΣΣΑ", "ΑΚΡΟΠΟΛΗ", "ΜΕΛΙΣΣΑ", "ΡΟΔΙ", "ΣΕΛΗΝΗ", "ΓΑΛΗΝΗ", "ΟΜΕΓΑ", "ΔΕΛΤΑ", "ΖΕΦΥΡΟΣ", "ΑΛΚΥΟΝΗ",
        ),
        (
            "ΑΡΤΟΠΟΙΕΙΟ", "ΦΑΡΜΑΚΕΙΟ", "ΚΑΦΕ", "ΞΕΝΟΔΟΧΕΙΟ", "ΤΡΑΠΕΖΑ", "ΒΙΒΛΙΟΠΩΛΕΙΟ", "ΑΓΟΡΑ", "ΑΝΘΟΠΩΛΕΙΟ", "ΠΙΤΣΑ", "ΣΟΥΣΙ",
            "ΡΑΦΕΙΟ", "ΣΥΝΕΡΓΕΙΟ", "ΞΕΝΩΝΑΣ", "ΟΔΟΝΤΙΑΤΡΕΙΟ", "ΣΙΝΕΜΑ", "ΜΠΑΡ", "ΓΥΜΝΑΣΤΗΡΙΟ", "ΟΠΤΙΚΑ", "ΣΟΥΒΛΑΚΙ", "ΜΕΖΕΔΕΣ",
            "ΚΟΜΜΩΤΗΡΙΟ", "ΠΑΙΧΝΙΔΙΑ", "ΥΠΟΔΗΜΑΤΑ", "ΜΟΥΣΙΚΗ", "ΠΟΔΗΛΑΤΑ", "ΚΑΘΑΡΙΣΤΗΡΙΟ", "ΚΡΕΟΠΩΛΕΙΟ", "ΠΑΝΤΟΠΩΛΕΙΟ", "ΤΣΑΙ", "ΤΑΒΕΡΝΑ",
        ),
        "{shop} {name}",
    ),
    "japanese": (
        (
            "さくら", "ひまわり", "あおば", "みどり", "こだま", "ひかり", "つばさ", "はるか", "すずらん", "もみじ",
            "かえで", "あさひ", "ふじ", "やまと", "みなと", "ゆめ", "ほし", "つき", "そら", "うみ",
            "山田", "田中", "中村", "大和", "富士", "青空", "日の出", "銀河", "太陽", "若葉",
        ),
        (
            "パン屋", "薬局", "カフェ", "ホテル", "銀行", "書店", "市場", "花屋", "ピザ", "寿司",
            "洋服店", "自動車整備", "旅館", "歯科", "映画館", "酒場", "ジム", "眼鏡店", "ケバブ", "惣菜",
            "美容室", "おもちゃ", "靴店", "楽器店", "自転車", "クリーニング", "精肉店", "スーパー", "お茶", "食堂",
        ),
        "{name}{shop}",  # no space: さくら薬局
    ),
}
SIGN_STYLES = (  # (background, text)
    ((250, 250, 245), (20, 20, 20)),
    ((20, 30, 60), (250, 250, 250)),
    ((250, 215, 60), (25, 25, 25)),
    ((150, 20, 25), (255, 255, 255)),
    ((15, 15, 15), (255, 230, 90)),
)
SIGN_HEIGHT_M = 1.3
SIGN_BOTTOM_M = 3.2
PANO_STEP_M = 10.0
_PANO_RE = re.compile(r"^SYN(\d+)R(\d+)K(\d+)$")


@dataclass(frozen=True)
class Road:
    id: int
    line: LineString
    width: float


@dataclass(frozen=True)
class Sign:
    id: int
    text: str
    building_id: int
    left: tuple[float, float]  # bottom-left corner as seen from the front, local metres
    right: tuple[float, float]
    z0: float
    z1: float
    normal: tuple[float, float]  # outward, towards the street
    background: tuple[int, int, int]
    foreground: tuple[int, int, int]
    script: str = DEFAULT_SCRIPT  # the writing system of `text` (which font draws it)

    @property
    def center(self) -> tuple[float, float, float]:
        return ((self.left[0] + self.right[0]) / 2, (self.left[1] + self.right[1]) / 2, (self.z0 + self.z1) / 2)


Wall = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


def walls_of(poly: Polygon) -> tuple[Wall, ...]:
    """(start, end, outward unit normal) for each wall of a footprint."""
    coords = list(poly.exterior.coords)
    out = []
    for p, q in zip(coords, coords[1:]):
        dx, dy = q[0] - p[0], q[1] - p[1]
        n = math.hypot(dx, dy)
        nx, ny = dy / n, -dx / n
        if poly.contains(Point((p[0] + q[0]) / 2 + nx * 0.1, (p[1] + q[1]) / 2 + ny * 0.1)):
            nx, ny = -nx, -ny
        out.append((p, q, (nx, ny)))
    return tuple(out)


@dataclass(frozen=True)
class Building:
    id: int
    footprint: Polygon
    height: float
    colour: str
    sign: Optional[Sign]
    walls: tuple[Wall, ...] = ()

    @property
    def facade_rgb(self) -> tuple[int, int, int]:
        return PALETTE[self.colour]

    @property
    def roof_rgb(self) -> tuple[int, int, int]:
        return tuple(int(c * 0.78) for c in PALETTE[self.colour])  # type: ignore[return-value]


@dataclass(frozen=True)
class Tree:
    x: float
    y: float
    crown_r: float
    height: float


@dataclass(frozen=True)
class Pano:
    id: str
    road_id: int
    x: float
    y: float
    lat: float
    lon: float
    date: str


def _rng(seed: int, name: str) -> np.random.Generator:
    salt = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, salt])


class World:
    """The town. Build it with `World.generate(...)`; every query is a pure function of it."""

    def __init__(self, seed: int, lat0: float, lon0: float, extent: tuple[float, float, float, float], script: str = DEFAULT_SCRIPT):
        self.seed = seed
        self.script = check_script(script)  # the writing system of its shop signs
        self.lat0, self.lon0 = lat0, lon0
        self.extent = extent  # (minx, miny, maxx, maxy) local metres
        self.fwd, self.inv = equidistant(lat0, lon0)
        self.roads: list[Road] = []
        self.lake: Optional[Polygon] = None
        self.parks: list[Polygon] = []
        self.buildings: list[Building] = []
        self.trees: list[Tree] = []

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def generate(cls, seed: int, lat0: float, lon0: float, half_width_m: float, half_height_m: float, script: str = DEFAULT_SCRIPT) -> "World":
        world = cls(seed, lat0, lon0, (-half_width_m, -half_height_m, half_width_m, half_height_m), script)
        world._layout()
        return world

    @classmethod
    def for_region(cls, region) -> "World":
        """The world behind a region whose manifest says `"imagery": "synthetic"`."""
        lat0, lon0 = region.centroid
        fwd, _ = equidistant(lat0, lon0)
        ring = np.asarray(region.polygon.exterior.coords)
        xs, ys = fwd.transform(ring[:, 0], ring[:, 1])
        margin = 150.0
        hw = max(abs(np.min(xs)), abs(np.max(xs))) + margin
        hh = max(abs(np.min(ys)), abs(np.max(ys))) + margin
        seed = region.synthetic_world.seed if region.synthetic_world else 0
        script = region.synthetic_world.script if region.synthetic_world else DEFAULT_SCRIPT
        return cls.generate(seed, lat0, lon0, float(hw), float(hh), script)

    def _grid_lines(self, lo: float, hi: float, rng: np.random.Generator) -> list[tuple[float, float]]:
        """(position, width) of parallel roads every ~110 m; every third is a wide avenue."""
        out, pos, i = [], lo + rng.uniform(20, 60), 0
        while pos < hi:
            out.append((pos, 14.0 if i % 3 == 0 else 9.0))
            pos += rng.uniform(95, 130)
            i += 1
        return out

    def _layout(self) -> None:
        minx, miny, maxx, maxy = self.extent
        rng = _rng(self.seed, "layout")
        w, h = maxx - minx, maxy - miny
        lake_c = (minx + w * rng.uniform(0.3, 0.7), miny + h * rng.uniform(0.3, 0.7))
        self.lake = affinity.scale(Point(lake_c).buffer(1.0, 64), w * 0.12, h * 0.14)
        lake_keepout = self.lake.buffer(35.0)

        vertical = self._grid_lines(minx, maxx, rng)
        horizontal = self._grid_lines(miny, maxy, rng)
        rid = 0
        for x, width in vertical:
            rid = self._add_road(rid, LineString([(x, miny), (x, maxy)]), width, lake_keepout)
        for y, width in horizontal:
            rid = self._add_road(rid, LineString([(minx, y), (maxx, y)]), width, lake_keepout)

        used_texts: set[str] = set()
        bid = 0
        for (x0, w0), (x1, w1) in zip(vertical, vertical[1:]):
            for (y0, h0), (y1, h1) in zip(horizontal, horizontal[1:]):
                block = box(x0 + w0 / 2 + 4, y0 + h0 / 2 + 4, x1 - w1 / 2 - 4, y1 - h1 / 2 - 4)
                if block.intersects(lake_keepout):
                    continue
                if rng.random() < 0.15:
                    self.parks.append(block)
                    for _ in range(int(block.area / 400)):
                        bx0, by0, bx1, by1 = block.bounds
                        self.trees.append(
                            Tree(rng.uniform(bx0 + 3, bx1 - 3), rng.uniform(by0 + 3, by1 - 3), rng.uniform(2.0, 3.5), rng.uniform(6, 11))
                        )
                    continue
                bid = self._fill_block(block, bid, rng, used_texts)

        self._plant_street_trees(rng)

    def _add_road(self, rid: int, line: LineString, width: float, keepout: Polygon) -> int:
        pieces = line.difference(keepout)
        for piece in getattr(pieces, "geoms", [pieces]):
            if not piece.is_empty and piece.length > 30:
                self.roads.append(Road(rid, piece, width))
                rid += 1
        return rid

    def _fill_block(self, block: Polygon, bid: int, rng: np.random.Generator, used: set[str]) -> int:
        bx0, by0, bx1, by1 = block.bounds
        depth_max = max(8.0, min(22.0, (by1 - by0) / 2 - 1, (bx1 - bx0) / 2 - 1))
        placed: list[Polygon] = []
        # Street side of the block: (edge start, edge end, outward normal).
        edges = [
            ((bx0, by0), (bx1, by0), (0.0, -1.0)),
            ((bx1, by1), (bx0, by1), (0.0, 1.0)),
            ((bx0, by1), (bx0, by0), (-1.0, 0.0)),
            ((bx1, by0), (bx1, by1), (1.0, 0.0)),
        ]
        for (sx, sy), (ex, ey), normal in edges:
            length = math.hypot(ex - sx, ey - sy)
            ux, uy = (ex - sx) / length, (ey - sy) / length
            t = 0.0
            while t < length - 10:
                frontage = min(rng.uniform(14, 26), length - t)
                depth = rng.uniform(10, depth_max) if depth_max > 10 else depth_max
                setback = rng.uniform(0, 2)
                inward = (-normal[0], -normal[1])
                a = (sx + ux * t + inward[0] * setback, sy + uy * t + inward[1] * setback)
                b = (a[0] + ux * (frontage - 1.5), a[1] + uy * (frontage - 1.5))
                c = (b[0] + inward[0] * depth, b[1] + inward[1] * depth)
                d = (a[0] + inward[0] * depth, a[1] + inward[1] * depth)
                poly = Polygon([a, b, c, d]).normalize()
                t += frontage
                if frontage < 10 or any(poly.intersects(p) for p in placed):
                    continue
                placed.append(poly)
                colour = list(PALETTE)[int(rng.integers(len(PALETTE)))]
                height = float(rng.choice([7.0, 10.0, 13.0, 16.0, 22.0, 30.0]))
                sign = None
                if rng.random() < 0.6:
                    sign = self._make_sign(bid, a, b, normal, rng, used)
                self.buildings.append(Building(bid, poly, height, colour, sign, walls_of(poly)))
                bid += 1
        return bid

    def _make_sign(self, bid, a, b, normal, rng, used: set[str]) -> Optional[Sign]:
        facade = math.hypot(b[0] - a[0], b[1] - a[1])
        names, shops, pattern = SIGN_WORDS[self.script]
        for _ in range(8):
            name = names[int(rng.integers(len(names)))]
            # NFC: the text drawn is the ground truth OCR is scored against, as one canonical string.
            text = unicodedata.normalize("NFC", pattern.format(name=name, shop=shops[int(rng.integers(len(shops)))]))
            if text in used:
                continue
            tw, th = sign_texture_size(text, self.script)
            width = SIGN_HEIGHT_M * tw / th
            if width > facade - 1.5:
                continue
            used.add(text)
            mid = ((a[0] + b[0]) / 2 + normal[0] * 0.05, (a[1] + b[1]) / 2 + normal[1] * 0.05)
            right = (-normal[1], normal[0])  # viewer faces -normal; their right-hand side
            bg, fg = SIGN_STYLES[int(rng.integers(len(SIGN_STYLES)))]
            return Sign(
                id=bid,
                text=text,
                building_id=bid,
                left=(mid[0] - right[0] * width / 2, mid[1] - right[1] * width / 2),
                right=(mid[0] + right[0] * width / 2, mid[1] + right[1] * width / 2),
                z0=SIGN_BOTTOM_M,
                z1=SIGN_BOTTOM_M + SIGN_HEIGHT_M,
                normal=normal,
                background=bg,
                foreground=fg,
                script=self.script,
            )
        return None

    def _plant_street_trees(self, rng: np.random.Generator) -> None:
        blocked = shapely.union_all([b.footprint.buffer(3.0) for b in self.buildings] + [self.lake])
        shapely.prepare(blocked)
        road_area = self.road_area
        for road in self.roads:
            (x0, y0), (x1, y1) = road.line.coords[0], road.line.coords[-1]
            length = road.line.length
            ux, uy = (x1 - x0) / length, (y1 - y0) / length
            for side in (-1, 1):
                off = side * (road.width / 2 + 2.0)
                t = rng.uniform(0, 14)
                while t < length:
                    if rng.random() < 0.3:
                        px, py = x0 + ux * t - uy * off, y0 + uy * t + ux * off
                        if not blocked.contains(Point(px, py)) and not road_area.contains(Point(px, py)):
                            self.trees.append(Tree(px, py, rng.uniform(1.8, 3.0), rng.uniform(6, 10)))
                    t += 14

    # ----- indexes --------------------------------------------------------------------------
    @cached_property
    def road_area(self) -> Polygon:
        return shapely.union_all(self.road_polygons)

    @cached_property
    def road_polygons(self) -> list[Polygon]:
        return [r.line.buffer(r.width / 2, cap_style="flat") for r in self.roads]

    @cached_property
    def walk_polygons(self) -> list[Polygon]:
        return [r.line.buffer(r.width / 2 + 4, cap_style="flat") for r in self.roads]

    @cached_property
    def dash_tree(self) -> STRtree:
        return STRtree(self.road_dashes)

    @cached_property
    def road_dashes(self) -> list[Polygon]:
        """Centre-line dashes, 3 m long every 9 m."""
        out = []
        for r in self.roads:
            t = 3.0
            while t + 3 < r.line.length:
                seg = ops.substring(r.line, t, t + 3)
                out.append(seg.buffer(0.15, cap_style="flat"))
                t += 9.0
        return out

    @cached_property
    def _road_tree(self) -> STRtree:
        return STRtree([r.line for r in self.roads])

    @cached_property
    def building_tree(self) -> STRtree:
        return STRtree([b.footprint for b in self.buildings])

    @cached_property
    def tree_tree(self) -> STRtree:
        return STRtree([Point(t.x, t.y).buffer(t.crown_r, 8) for t in self.trees])

    @cached_property
    def signs(self) -> list[Sign]:
        return [b.sign for b in self.buildings if b.sign is not None]

    # ----- coordinates ----------------------------------------------------------------------
    def to_local(self, lat: float, lon: float) -> tuple[float, float]:
        x, y = self.fwd.transform(lon, lat)
        return float(x), float(y)

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lon, lat = self.inv.transform(x, y)
        return float(lat), float(lon)

    @cached_property
    def _to_mercator(self) -> Transformer:
        return local_to_webmercator("aeqd", self.lat0, self.lon0)

    def mercator(self, geom):
        """A local-frame geometry in Web Mercator metres (for tiles)."""
        t = self._to_mercator
        return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))

    @cached_property
    def mercator_layers(self) -> dict:
        """Every feature in Web Mercator, with an STRtree per layer, built once per world."""
        roads = [self.mercator(g) for g in self.road_polygons]
        walks = [self.mercator(g) for g in self.walk_polygons]
        marks = [self.mercator(d) for d in self.road_dashes]
        buildings = [self.mercator(b.footprint) for b in self.buildings]
        trees = [self.mercator(Point(t.x, t.y).buffer(t.crown_r, 12)) for t in self.trees]
        parks = [self.mercator(p) for p in self.parks]
        lake = [self.mercator(self.lake)] if self.lake is not None else []
        return {
            "roads": (roads, STRtree(roads)),
            "walks": (walks, STRtree(walks)),
            "marks": (marks, STRtree(marks)),
            "buildings": (buildings, STRtree(buildings)),
            "trees": (trees, STRtree(trees)),
            "parks": (parks, STRtree(parks)),
            "lake": (lake, STRtree(lake)),
        }

    # ----- panoramas ------------------------------------------------------------------------
    def _pano_at(self, road: Road, k: int) -> Pano:
        p = road.line.interpolate(min(k * PANO_STEP_M, road.line.length))
        lat, lon = self.to_latlon(p.x, p.y)
        # Capture dates vary by road, as real coverage does.
        year = 2015 + (road.id * 7 + self.seed) % 10
        month = 1 + (road.id * 5 + k // 20) % 12
        return Pano(f"SYN{self.seed}R{road.id}K{k}", road.id, p.x, p.y, lat, lon, f"{year}-{month:02d}")

    def snap(self, lat: float, lon: float, radius_m: float) -> Optional[Pano]:
        """The panorama on the nearest road within `radius_m`, on a 10 m grid along the road."""
        x, y = self.to_local(lat, lon)
        pt = Point(x, y)
        idx = self._road_tree.query_nearest(pt, max_distance=radius_m)
        if len(idx) == 0:
            return None
        road = self.roads[int(min(idx))]
        along = road.line.project(pt)
        k0 = int(round(along / PANO_STEP_M))
        for k in (k0, k0 - 1, k0 + 1):
            if 0 <= k * PANO_STEP_M <= road.line.length + PANO_STEP_M / 2:
                pano = self._pano_at(road, k)
                if math.hypot(pano.x - x, pano.y - y) <= radius_m:
                    return pano
        return None

    def pano(self, pano_id: str) -> Optional[Pano]:
        m = _PANO_RE.match(pano_id)
        if not m or int(m.group(1)) != self.seed:
            return None
        rid, k = int(m.group(2)), int(m.group(3))
        road = next((r for r in self.roads if r.id == rid), None)
        if road is None or k * PANO_STEP_M > road.line.length + PANO_STEP_M / 2:
            return None
        return self._pano_at(road, k)
