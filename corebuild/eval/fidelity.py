"""`corebuild eval fidelity BUILD`: are a demo build's descriptions true?

A build of a synthetic-imagery region (the demo town) has exact ground truth: its manifest names
the region, the region manifest the world's seed and sign script, and
`World.for_region(region)` rebuilds the very world the imagery server rendered. For each kept
row the street capture's camera (the `SYN<seed>R<road>K<k>` pano id, else the row's
street_lat/street_lon; each view's heading, fov, pitch and size) says what could be seen:

- a label image per view, drawn like `render.render_street` (same frustum, back faces, painter's
  order) at a quarter of the view's size, with a building's index, a tree, a park or the lake in
  each pixel instead of a colour: the facade colours (`world.PALETTE` names) in the left, middle
  and right thirds of the band above the eye line (the band the template describer reads its
  colour cues from), whether trees, a park or water show, and which signs show;
- `render.clean_signs`: the signs a view shows whole and readable (the OCR ground truth).

Claims are taken from the description: sign texts (quoted phrases, plus `description_parts`'s
`signs` for model describers), facade colours (a colour word in a clause about buildings, with
the direction it was said of: the template's "Facing north: a red building on the left", or
free text's north/east/south/west, left/right/ahead/behind), and trees, a park (park, lawn,
grass) and water (lake, pond, river, water) present or, negated ("no water"), absent. Each is
checked against the ground truth of the view it names (the whole camera when it names none);
the report gives precision per claim type, sign recall against the clean signs, and the rows
with the lowest precision with their false claims.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, Optional

# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------

CLAIM_TYPES = ("sign_text", "building_colour", "trees", "park", "water")
DIRECTIONS = {
    "north": 0.0, "north-east": 45.0, "northeast": 45.0, "east": 90.0, "south-east": 135.0, "southeast": 135.0,
    "south": 180.0, "south-west": 225.0, "southwest": 225.0, "west": 270.0, "north-west": 315.0, "northwest": 315.0,
}
# Colour words: the world's facade palette plus what a describer may say that the palette lacks
# (a claim of such a colour is false: no facade has it). Aliases map to one name.
FACADE_COLOURS = ("red", "orange", "yellow", "blue", "purple", "pink", "brown", "white", "teal", "beige")
COLOUR_ALIASES = {"gray": "grey", "violet": "purple", "turquoise": "teal", "cyan": "teal", "tan": "beige", "cream": "beige"}
OTHER_COLOURS = ("grey", "green", "black", "gold", "silver")
_COLOUR_RE = re.compile(r"\b(" + "|".join(sorted({*FACADE_COLOURS, *OTHER_COLOURS, *COLOUR_ALIASES}, key=len, reverse=True)) + r")(?:-?ish)?\b", re.I)
_BUILDING_RE = re.compile(
    r"\b(buildings?|houses?|fa[cç]ades?|shopfronts?|storefronts?|shops?|stores?|towers?|apartments?|structures?|roofs?|homes?|offices?|blocks of flats)\b", re.I
)
_DIRECTION_RE = re.compile(r"\b(north-?east|north-?west|south-?east|south-?west|north|east|south|west)(?:ward|wards|ern)?\b", re.I)
_SIDE_RE = re.compile(r"\b(left|right|ahead|in front|front|straight on|behind|back)\b", re.I)
_PRESENCE = {
    "trees": re.compile(r"\b(trees?|tree-lined|treelined)\b", re.I),
    "park": re.compile(r"\b(parks?|parkland|lawns?|grass|grassy|green spaces?|meadows?)\b", re.I),
    "water": re.compile(r"\b(lakes?|lakeside|lakefront|water|waterfront|ponds?|rivers?|canals?|shore|shoreline)\b", re.I),
}
_NEGATION_RE = re.compile(r"\b(no|not|without|none|nor|never|absent)\b", re.I)
_QUOTED_RE = re.compile(r"\"([^\"]{1,80})\"|“([^”]{1,80})”|«([^»]{1,80})»|„([^“”]{1,80})[“”]")
_STASHED_RE = re.compile("\x00(\\d+)\x00")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE_RE = re.compile(r"[,;:]|\s+(?:while|whereas|but)\s+")


@dataclass(frozen=True)
class Claim:
    """One checkable statement. `heading`: the compass heading it was said of (None: the whole
    camera); `side`: left / ahead / right within that view (None: anywhere in it)."""

    kind: str  # one of CLAIM_TYPES
    value: str  # the sign text, the colour name, or "" for presence claims
    heading: Optional[float] = None
    side: Optional[str] = None
    negated: bool = False  # "no water": true when absent
    source: str = "description"  # or "parts" (description_parts' signs)

    def label(self) -> str:
        where = ""
        if self.heading is not None:
            where = f" facing {_compass(self.heading)}"
        if self.side:
            where += f" {self.side}"
        what = f'sign "{self.value}"' if self.kind == "sign_text" else (f"{self.value} building" if self.kind == "building_colour" else self.kind)
        return f"{'no ' if self.negated else ''}{what}{where}"


def _compass(heading: float) -> str:
    names = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")
    return names[int(((heading % 360) + 22.5) // 45) % 8]


def _side(text: str) -> tuple[Optional[str], bool]:
    """(left / ahead / right or None, whether the clause looks behind the camera)."""
    m = _SIDE_RE.findall(text)
    side, behind = None, False
    for word in m:
        w = word.lower()
        if w in ("left", "right"):
            side = w
        elif w in ("ahead", "in front", "front", "straight on"):
            side = side or "ahead"
        else:
            behind = True
    return side, behind


def extract_claims(text: Optional[str], parts: Optional[str] = None, ignore: tuple[str, ...] = ()) -> list[Claim]:
    """The claims a description makes (see the module doc). Sign texts: every quoted phrase and
    each of `parts`'s `signs` (a JSON object; once per distinct text). `ignore`: strings that
    claim nothing (the region's name: "Lake Town" is no water)."""
    claims: list[Claim] = []
    text = text or ""
    for name in ignore:
        if name:
            text = text.replace(name, "the region")
    seen_signs: set[str] = set()
    # Quoted phrases first, so that sign text ("ST. JOHN", "BLUE BAR") ends no sentence and says no colour.
    quotes: list[str] = []

    def _stash(m: re.Match) -> str:
        quotes.append(next(g for g in m.groups() if g is not None).strip())
        return f"\x00{len(quotes) - 1}\x00"

    for sentence in _SENTENCE_RE.split(_QUOTED_RE.sub(_stash, text)):
        heading: Optional[float] = None  # carried forward within a sentence ("Facing north: ...")
        for m in _STASHED_RE.finditer(sentence):
            quoted = quotes[int(m.group(1))]
            if quoted and norm_text(quoted) not in seen_signs:
                seen_signs.add(norm_text(quoted))
                # the heading of the sentence so far, for the report only (signs are checked per camera)
                d = _DIRECTION_RE.findall(sentence[: m.start()])
                claims.append(Claim("sign_text", quoted, DIRECTIONS.get(d[-1].lower()) if d else None))
        plain = _STASHED_RE.sub(" SIGNTEXT ", sentence)
        for clause in _CLAUSE_RE.split(plain):
            d = _DIRECTION_RE.findall(clause)
            if d:
                heading = DIRECTIONS[d[-1].lower()]
            side, behind = _side(clause)
            h = heading
            if behind and h is not None:
                h, side = (h + 180.0) % 360, None
            elif behind:
                side = None
            negated = bool(_NEGATION_RE.search(clause))
            if _BUILDING_RE.search(clause) and not negated:
                for colour in dict.fromkeys(c.lower() for c in _COLOUR_RE.findall(clause)):
                    claims.append(Claim("building_colour", COLOUR_ALIASES.get(colour, colour), h, side))
            for kind, rx in _PRESENCE.items():
                if rx.search(clause):
                    claims.append(Claim(kind, "", h, None, negated))
    if parts:
        try:
            doc = json.loads(parts)
        except ValueError:
            doc = None
        for s in (doc.get("signs") or []) if isinstance(doc, dict) else []:
            if isinstance(s, str) and s.strip() and norm_text(s) not in seen_signs:
                seen_signs.add(norm_text(s))
                claims.append(Claim("sign_text", s.strip(), source="parts"))
    return claims


def norm_text(text: str) -> str:
    """Sign text as compared: NFC, case-folded, letters and digits only (spaces and punctuation
    are how a sign is read, not what it says)."""
    t = unicodedata.normalize("NFC", text).casefold()
    return "".join(ch for ch in t if ch.isalnum())


def _reads_part(key: str, sign: str) -> bool:
    """Whether a normalised claimed text (two characters or more) is a part of `sign`, not all of
    it: one word of two, or a fragment of a sign the view's edge cuts ("ANK" of CEDAR BANK)."""
    full = norm_text(sign)
    return len(key) >= 2 and key != full and key in full


def _similar(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------

LABEL_SCALE = 4  # label images are drawn at 1/4 of the view's size
BAND = (0.15, 0.5)  # rows of the facade band (fractions of the height), as the template's cues
MIN_SIDE_SHARE = 0.03  # a colour "shows" on a side when it covers this share of its band cells
SIDES = ("left", "ahead", "right")
_PARK, _WATER, _TREE, _BUILDING, _SIGN = 1, 2, 3, 1000, 1_000_000
NEAR_SIGN = 0.75  # a claimed text this similar to a visible sign's is a misreading of it


@dataclass
class ViewTruth:
    heading: float
    side_colours: dict[str, dict[str, float]]  # side -> colour -> share of that side's band
    trees: bool
    park: bool
    water: bool
    signs: set[str]  # sign texts (as drawn) showing in this view
    clean: set[str]  # render.clean_signs: whole, readable

    @property
    def colours(self) -> set[str]:
        return {c for side in self.side_colours.values() for c, share in side.items() if share >= MIN_SIDE_SHARE}


@dataclass
class CameraTruth:
    views: list[ViewTruth]

    def view(self, heading: Optional[float]) -> Optional[ViewTruth]:
        """The view a heading names: the nearest within 45 degrees."""
        if heading is None or not self.views:
            return None
        best = min(self.views, key=lambda v: _angle(v.heading, heading))
        return best if _angle(best.heading, heading) <= 45.0 else None

    @property
    def signs(self) -> set[str]:
        return set().union(*(v.signs for v in self.views)) if self.views else set()

    @property
    def clean(self) -> set[str]:
        return set().union(*(v.clean for v in self.views)) if self.views else set()


def _angle(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def _label_view(world, cam):
    """The label image (np.int32, H x W) of a camera, drawn as `render.render_street` draws the
    view: ground (parks, the lake), then buildings (front walls, their sign) and trees, far to near."""
    import numpy as np
    from PIL import Image, ImageDraw
    from shapely.geometry import LineString, Point

    from corebuild.synthetic.render import _draw_ground, _seen, _sign_corners

    img = Image.new("I", (cam.width, cam.height), 0)
    draw = ImageDraw.Draw(img)
    frustum = cam.frustum()
    _draw_ground(draw, cam, _seen(world.parks, frustum), _PARK, frustum)
    if world.lake is not None:
        _draw_ground(draw, cam, [world.lake], _WATER, frustum)
    objects = []
    for i in world.building_tree.query(frustum):
        objects.append((world.buildings[int(i)].footprint.distance(Point(cam.x, cam.y)), "b", int(i)))
    for i in world.tree_tree.query(frustum):
        t = world.trees[int(i)]
        objects.append((math.hypot(t.x - cam.x, t.y - cam.y), "t", int(i)))
    objects.sort(key=lambda o: -o[0])
    for _, kind, i in objects:
        if kind == "t":
            t = world.trees[i]
            uv, depth = cam.project(np.array([[t.x, t.y, 0.0], [t.x, t.y, t.height - t.crown_r]], float))
            if depth[1] < 1.0:
                continue
            r_px = cam.focal * t.crown_r / depth[1]
            trunk_px = max(1.0 / LABEL_SCALE, cam.focal * 0.18 / depth[1])
            (u0, v0), (u1, v1) = uv
            draw.rectangle([u0 - trunk_px, v1, u0 + trunk_px, v0], fill=_TREE)
            draw.ellipse([u1 - r_px, v1 - r_px * 1.1, u1 + r_px, v1 + r_px * 0.9], fill=_TREE)
            continue
        b = world.buildings[i]
        normals = []
        for p, q, (nx, ny) in b.walls:
            mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
            if nx * (cam.x - mx) + ny * (cam.y - my) <= 0:
                continue
            seg = LineString([p, q]).intersection(frustum)
            if seg.is_empty or not isinstance(seg, LineString):
                continue
            (ax, ay), (bx, by) = seg.coords[0], seg.coords[-1]
            uv, _ = cam.project(np.array([[ax, ay, 0], [bx, by, 0], [bx, by, b.height], [ax, ay, b.height]], float))
            draw.polygon([tuple(p) for p in uv], fill=_BUILDING + i)
            normals.append((nx, ny))
        s = b.sign
        if s is not None and any(abs(n[0] - s.normal[0]) + abs(n[1] - s.normal[1]) < 1e-6 for n in normals):
            uv, depth = cam.project(_sign_corners(s))
            if not np.any(depth < 1.0):
                draw.polygon([tuple(p) for p in uv], fill=_SIGN + i)
    return np.asarray(img, dtype=np.int64)


def view_truth(world, x: float, y: float, heading: float, fov: float = 90.0, pitch: float = 0.0, width: int = 640, height: int = 640) -> ViewTruth:
    """What the view (camera at local x, y) shows: see `ViewTruth`."""
    import numpy as np

    from corebuild.synthetic.render import Camera, clean_signs

    w, h = max(3, int(width) // LABEL_SCALE), max(3, int(height) // LABEL_SCALE)
    labels = _label_view(world, Camera(x, y, heading, fov, pitch, w, h))
    band = labels[int(h * BAND[0]) : int(h * BAND[1])]
    side_colours: dict[str, dict[str, float]] = {}
    for k, side in enumerate(SIDES):
        cells = band[:, k * w // 3 : (k + 1) * w // 3]
        ids, counts = np.unique(cells[(cells >= _BUILDING) & (cells < _SIGN)] - _BUILDING, return_counts=True)
        shares: Counter = Counter()
        for i, n in zip(ids, counts):
            shares[world.buildings[int(i)].colour] += n / max(1, cells.size)
        side_colours[side] = {c: round(float(v), 4) for c, v in shares.most_common()}
    shown = np.unique(labels[labels >= _SIGN] - _SIGN)
    signs = {world.buildings[int(i)].sign.text for i in shown}
    clean = {s.text for s in clean_signs(world, Camera(x, y, heading, fov, pitch, int(width), int(height)))}
    return ViewTruth(
        heading=float(heading),
        side_colours=side_colours,
        trees=bool((labels == _TREE).any()),
        park=bool((labels == _PARK).any()),
        water=bool((labels == _WATER).any()),
        signs=signs | clean,
        clean=clean,
    )


def camera_position(world, row: dict) -> tuple[Optional[tuple[float, float]], Optional[str]]:
    """(local x, y) of a row's street camera, or (None, why not). A `SYN<seed>R<road>K<k>` pano id
    is where the server put the camera; other ids (Mapillary's) fall back to street_lat/lon."""
    from corebuild.synthetic.world import _PANO_RE

    pano_id = row.get("pano_id") or ""
    m = _PANO_RE.match(pano_id)
    if m:
        if int(m.group(1)) != world.seed:
            return None, "pano_of_another_world"
        pano = world.pano(pano_id)
        if pano is None:
            return None, "unknown_pano"
        return (pano.x, pano.y), None
    if row.get("street_lat") is None or row.get("street_lon") is None:
        return None, "no_street_location"
    return world.to_local(row["street_lat"], row["street_lon"]), None


def camera_truth(world, xy: tuple[float, float], views: list[dict]) -> CameraTruth:
    out = []
    for v in views:
        out.append(
            view_truth(
                world, xy[0], xy[1], float(v.get("heading") or 0.0) % 360, float(v.get("fov") or 90.0), float(v.get("pitch") or 0.0),
                int(v.get("width") or 640), int(v.get("height") or 640),
            )
        )
    return CameraTruth(out)


# ---------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    claim: Claim
    true: bool
    why: str = ""  # for false claims: what the ground truth says instead
    near: Optional[str] = None  # sign text: the visible sign it misreads, or reads part of
    partial: bool = False  # sign text: a whole word or more of a visible sign, not all of it
    chance: Optional[float] = None  # building colour: share of the palette true at that place
    dominant: Optional[bool] = None  # building colour said of a side: the side's largest colour
    reason: str = ""  # for false claims, a short code (counted in the report)


def check_claim(claim: Claim, truth: CameraTruth, world_signs: Optional[set[str]] = None) -> Verdict:
    view = truth.view(claim.heading)
    views = [view] if view is not None else truth.views
    where = f"facing {_compass(view.heading)}" if view is not None else "from this camera"
    if claim.kind == "sign_text":
        visible = {norm_text(t): t for t in truth.signs}
        key = norm_text(claim.value)
        if key in visible:
            return Verdict(claim, True)
        part = next((t for t in sorted(truth.signs) if _reads_part(key, t)), None)
        if part is not None:
            return Verdict(claim, False, f"part of the visible sign \"{part}\"", near=part, partial=True, reason="partial")
        best = max(visible, key=lambda t: _similar(key, t), default=None)
        if best is not None and _similar(key, best) >= NEAR_SIGN:
            return Verdict(claim, False, f"misreads the visible sign \"{visible[best]}\"", near=visible[best], reason="misread")
        if world_signs and key in {norm_text(t) for t in world_signs}:
            return Verdict(claim, False, "a sign of the town, not visible from this camera", reason="elsewhere_in_town")
        why = "no such sign in view" + (f" (visible: {', '.join(sorted(truth.signs))})" if truth.signs else "")
        return Verdict(claim, False, why, reason="no_such_sign" if truth.signs else "no_sign_in_view")
    if claim.kind == "building_colour":
        if claim.value not in FACADE_COLOURS:
            return Verdict(claim, False, f"no facade in the town is {claim.value}", reason="not_a_facade_colour")
        if view is not None and claim.side:
            shares = view.side_colours.get(claim.side, {})
            colours = {c for c, s in shares.items() if s >= MIN_SIDE_SHARE}
            chance = len(colours) / len(FACADE_COLOURS)
            dominant = bool(shares) and max(shares, key=shares.get) == claim.value
            if claim.value in colours:
                return Verdict(claim, True, chance=chance, dominant=dominant)
            seen = ", ".join(f"{c} {s:.0%}" for c, s in shares.items() if s >= MIN_SIDE_SHARE) or "no building"
            elsewhere = " (it shows elsewhere in that view)" if claim.value in view.colours else ""
            return Verdict(claim, False, f"{where} {claim.side}: {seen}{elsewhere}", chance=chance, dominant=False, reason="other_side" if elsewhere else "not_in_view")
        colours = set().union(*(v.colours for v in views)) if views else set()
        chance = len(colours) / len(FACADE_COLOURS)
        if claim.value in colours:
            return Verdict(claim, True, chance=chance)
        return Verdict(claim, False, f"{where}: {', '.join(sorted(colours)) or 'no building'}", chance=chance, reason="not_in_view")
    present = any(getattr(v, claim.kind) for v in views)
    if present != claim.negated:
        return Verdict(claim, True)
    return Verdict(claim, False, f"{claim.kind} {'shows' if present else 'does not show'} {where}", reason="shows" if present else "absent")


@dataclass
class Tally:
    claims: int = 0
    true: int = 0
    near: int = 0  # sign text: misreadings or partial readings of a visible sign
    partial: int = 0
    chance: float = 0.0  # building colour: summed chance of a random palette colour being true
    sided: int = 0  # building colour claims naming a view and a side
    dominant: int = 0  # of those, naming the side's largest colour
    by_value: Counter = field(default_factory=Counter)  # value -> claims
    true_by_value: Counter = field(default_factory=Counter)
    false_by_reason: Counter = field(default_factory=Counter)

    def add(self, v: Verdict) -> None:
        self.claims += 1
        self.true += v.true
        if not v.true:
            self.false_by_reason[v.reason or "?"] += 1
        self.near += v.near is not None
        self.partial += v.partial
        self.chance += v.chance or 0.0
        if v.dominant is not None:
            self.sided += 1
            self.dominant += v.dominant
        key = v.claim.value if v.claim.kind == "building_colour" else ("negated" if v.claim.negated else "present") if v.claim.kind != "sign_text" else v.claim.source
        self.by_value[key] += 1
        self.true_by_value[key] += v.true


def _ratio(a: int, b: int) -> Optional[float]:
    return round(a / b, 4) if b else None


@dataclass
class RowResult:
    sample_id: str
    pano_id: Optional[str]
    verdicts: list[Verdict]
    clean: set[str]
    recalled: set[str]
    recalled_near: set[str]
    # presence claims: kind -> (views where it shows, of those the views a positive claim names)
    presence: dict[str, tuple[int, int]] = field(default_factory=dict)
    views: int = 0

    @property
    def precision(self) -> Optional[float]:
        return _ratio(sum(v.true for v in self.verdicts), len(self.verdicts))


def check_row(row: dict, world, truth: CameraTruth, world_signs: Optional[set[str]] = None, ignore: tuple[str, ...] = ()) -> RowResult:
    claims = extract_claims(row.get("description"), row.get("description_parts"), ignore)
    verdicts = [check_claim(c, truth, world_signs) for c in claims]
    said = {norm_text(v.claim.value) for v in verdicts if v.claim.kind == "sign_text"}
    near = {norm_text(v.near) for v in verdicts if v.near}
    clean = truth.clean
    recalled = {t for t in clean if norm_text(t) in said}
    recalled_near = {t for t in clean if norm_text(t) in said | near}
    presence = {}
    for kind in ("trees", "park", "water"):
        shown = {i for i, v in enumerate(truth.views) if getattr(v, kind)}
        named: set[int] = set()
        for c in claims:
            if c.kind == kind and not c.negated:
                view = truth.view(c.heading)
                named |= {truth.views.index(view)} if view is not None else set(range(len(truth.views)))
        presence[kind] = (len(shown), len(shown & named))
    return RowResult(row.get("sample_id") or "?", row.get("pano_id"), verdicts, clean, recalled, recalled_near, presence, len(truth.views))


def summarise(results: list[RowResult], worst: int) -> dict[str, Any]:
    tallies = {k: Tally() for k in CLAIM_TYPES}
    for r in results:
        for v in r.verdicts:
            tallies[v.claim.kind].add(v)
    clean = sum(len(r.clean) for r in results)
    out: dict[str, Any] = {}
    for kind, t in tallies.items():
        entry: dict[str, Any] = {
            "claims": t.claims, "true": t.true, "false": t.claims - t.true, "precision": _ratio(t.true, t.claims), "false_by_reason": dict(t.false_by_reason.most_common()),
        }
        if kind == "sign_text":
            entry.update(
                misread=t.near - t.partial,
                partial=t.partial,
                precision_lenient=_ratio(t.true + t.near, t.claims),
                clean_signs=clean,
                recall=_ratio(sum(len(r.recalled) for r in results), clean),
                recall_lenient=_ratio(sum(len(r.recalled_near) for r in results), clean),
            )
        if kind in ("trees", "park", "water"):
            shown = sum(r.presence.get(kind, (0, 0))[0] for r in results)
            views = sum(r.views for r in results)
            cameras = sum(1 for r in results if r.presence.get(kind, (0, 0))[0])
            entry.update(
                views_showing=shown, view_rate=_ratio(shown, views), camera_rate=_ratio(cameras, len(results)),
                recall=_ratio(sum(r.presence.get(kind, (0, 0))[1] for r in results), shown),
            )
        if kind == "building_colour":
            # what a describer naming a random palette colour at the same places would score
            entry["chance_precision"] = round(t.chance / t.claims, 4) if t.claims else None
            # stricter: of the claims naming a view's side, those naming that side's largest colour
            entry.update(sided_claims=t.sided, dominant=t.dominant, precision_dominant=_ratio(t.dominant, t.sided))
        entry["by_value"] = {k: {"claims": n, "true": t.true_by_value[k], "precision": _ratio(t.true_by_value[k], n)} for k, n in t.by_value.most_common()}
        out[kind] = entry
    total = sum(t.claims for t in tallies.values())
    ranked = sorted((r for r in results if r.verdicts), key=lambda r: (r.precision, -sum(not v.true for v in r.verdicts), r.sample_id))
    return {
        "claims": out,
        "overall": {"claims": total, "true": sum(t.true for t in tallies.values()), "precision": _ratio(sum(t.true for t in tallies.values()), total)},
        "rows_without_claims": sum(1 for r in results if not r.verdicts),
        "worst": [
            {
                "sample_id": r.sample_id,
                "pano_id": r.pano_id,
                "precision": r.precision,
                "claims": len(r.verdicts),
                "false_claims": [{"type": v.claim.kind, "claim": v.claim.label(), "why": v.why} for v in r.verdicts if not v.true],
            }
            for r in ranked[:worst]
        ],
    }


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

_COLUMNS = ("sample_id", "status", "pano_id", "street_lat", "street_lon", "description", "description_parts")
_VIEW_FIELDS = ("heading", "fov", "pitch", "width", "height")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build", metavar="BUILD", help="a region build directory of a synthetic-imagery region (has manifest.json)")
    parser.add_argument("--worst", type=int, default=10, help="rows with the lowest precision to list (default: 10)")
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: BUILD/eval/fidelity.json)")
    parser.add_argument("--manifests", metavar="DIR", help="region manifests directory (default: the one the build names)")
    parser.add_argument("--limit", type=int, help="check only the first N kept rows")


def _region(manifest: dict, manifests: Optional[str]):
    from corebuild.regions import load_region, parse_region

    region_id = manifest["region_id"]
    if manifests:
        return load_region(region_id, manifests)
    path = (manifest.get("region") or {}).get("manifest")
    if path and Path(path).is_file():
        return parse_region(json.loads(Path(path).read_text(encoding="utf-8")), path)
    from corebuild.assets import MANIFESTS

    return load_region(region_id, (manifest.get("config") or {}).get("manifests_dir") or MANIFESTS)


def read_rows(build, limit: Optional[int] = None) -> list[dict]:
    """The kept rows' columns the check needs (the views without their image bytes)."""
    present = None
    rows: list[dict] = []
    for name in build.shard_names():
        if present is None:
            from corebuild.shards.storage import open_parquet

            present = set(open_parquet(build.storage, name).schema_arrow.names)
        cols = [c for c in _COLUMNS if c in present] + [f"street_views.list.element.{f}" for f in _VIEW_FIELDS]
        for row in build.read_table(name, cols).to_pylist():
            if row.get("status") == "kept":
                rows.append(row)
                if limit is not None and len(rows) >= limit:
                    return rows
    return rows


def _table(report: dict) -> str:
    lines = [f"{'claim type':<16} {'claims':>7} {'true':>6} {'precision':>9}  notes"]
    for kind, e in report["claims"].items():
        p = "-" if e["precision"] is None else f"{e['precision']:.3f}"
        note = ""
        if kind == "sign_text":
            rc = "-" if e["recall"] is None else f"{e['recall']:.3f}"
            rl = "-" if e["recall_lenient"] is None else f"{e['recall_lenient']:.3f}"
            pl = "-" if e["precision_lenient"] is None else f"{e['precision_lenient']:.3f}"
            note = f"recall {rc} of {e['clean_signs']} clean signs; {e['misread']} misread, {e['partial']} partial (counting those: P {pl}, R {rl})"
            other = {k: n for k, n in e["false_by_reason"].items() if k not in ("misread", "partial")}
            if other:
                note += "; other false: " + ", ".join(f"{k} {n}" for k, n in other.items())
        elif kind == "building_colour":
            weak = [f"{c} {v['true']}/{v['claims']}" for c, v in e["by_value"].items() if v["precision"] is not None and v["precision"] < 0.8]
            ch = "-" if e.get("chance_precision") is None else f"{e['chance_precision']:.3f}"
            dm = "-" if e.get("precision_dominant") is None else f"{e['precision_dominant']:.3f}"
            note = f"chance {ch}; the side's largest colour {dm} of {e['sided_claims']}" + (("; weak: " + ", ".join(weak)) if weak else "")
        else:
            neg = e["by_value"].get("negated")
            rc = "-" if e.get("recall") is None else f"{e['recall']:.3f}"
            vr = "-" if e.get("view_rate") is None else f"{e['view_rate']:.0%}"
            cr = "-" if e.get("camera_rate") is None else f"{e['camera_rate']:.0%}"
            note = f"shows in {vr} of views, {cr} of cameras; claimed in {rc} of the views showing it" + (f"; {neg['claims']} negated" if neg else "")
        lines.append(f"{kind:<16} {e['claims']:>7} {e['true']:>6} {p:>9}  {note}")
    o = report["overall"]
    lines.append(f"{'all':<16} {o['claims']:>7} {o['true']:>6} {'-' if o['precision'] is None else format(o['precision'], '.3f'):>9}")
    return "\n".join(lines)


def evaluate(build_url: str, worst: int = 10, manifests: Optional[str] = None, limit: Optional[int] = None, progress=None) -> dict[str, Any]:
    from corebuild.dataset.reader import open_build
    from corebuild.errors import CorebuildError
    from corebuild.synthetic.world import World

    build = open_build(build_url)
    manifest = build.manifest
    region = _region(manifest, manifests)
    if region.imagery != "synthetic":
        raise CorebuildError(f"{build_url}: region {region.id!r} is not a synthetic-imagery region; fidelity needs the synthetic world's ground truth")
    world = World.for_region(region)
    world_signs = {s.text for s in world.signs}
    rows = read_rows(build, limit)
    results, skipped = [], Counter()
    for n, row in enumerate(rows):
        views = row.get("street_views") or []
        xy, why = camera_position(world, row)
        if xy is None or not views:
            skipped[why or "no_street_views"] += 1
            continue
        results.append(check_row(row, world, camera_truth(world, xy, views), world_signs, (region.name,)))
        if progress:
            progress(n + 1, len(rows))
    models = manifest.get("models") or {}
    report = {
        "build": build.url,
        "build_id": manifest.get("build_id"),
        "region_id": region.id,
        "world": {"seed": world.seed, "script": world.script},
        "describer": models.get("describer"),
        "prompt": (models.get("prompt") or {}).get("id"),
        "kept_rows": len(rows),
        "rows_checked": len(results),
        "rows_skipped": dict(skipped),
        "ground_truth": {
            "colour": f"facade colours covering >= {MIN_SIDE_SHARE:.0%} of a third of the band {BAND[0]:.0%}-{BAND[1]:.0%} of the view's height (labels drawn at 1/{LABEL_SCALE} size)",
            "sign_text": "exact after NFC, case-folding and dropping spaces/punctuation; misread: >= 0.75 similar to a visible sign; recall against render.clean_signs",
        },
        **summarise(results, worst),
    }
    if skipped:
        print(f"skipped {sum(skipped.values())} row(s): {dict(skipped)}", file=sys.stderr)
    return report


def main(args: argparse.Namespace) -> int:
    from corebuild.errors import CorebuildError

    try:
        report = evaluate(args.build, args.worst, args.manifests, args.limit)
    except (CorebuildError, OSError, KeyError, ValueError) as exc:
        print(f"corebuild eval fidelity: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.build) / "eval" / "fidelity.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{report['region_id']} ({report['describer']}): {report['rows_checked']} of {report['kept_rows']} kept rows checked")
    print(_table(report))
    if report["worst"]:
        print(f"\nworst {len(report['worst'])} rows:")
        for w in report["worst"]:
            p = "-" if w["precision"] is None else f"{w['precision']:.2f}"
            print(f"  {w['sample_id']} {w['pano_id']} precision {p} of {w['claims']} claims")
            for f in w["false_claims"][:6]:
                print(f"    {f['claim']}: {f['why']}")
    print(f"\nwrote {out}")
    return 0
