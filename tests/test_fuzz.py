"""Fuzzed region manifests and command lines: every user error is a CorebuildError with a
one-line message naming the file and field (or flag), never a traceback; nothing unsafe is
accepted. Deterministic (derandomize=True) so CI sees the same cases on every run."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from corebuild import cli
from corebuild.errors import CorebuildError, ManifestError
from corebuild.stages.fetch import AERIAL_PRESETS, STREET_PROVIDERS
from corebuild.regions import CONTINENTS, IMAGERY_SOURCES, KNOWN_FIELDS, MAX_ABS_LAT, MAX_AREA_KM2, MAX_QUOTA, MIN_AREA_KM2, Region, load_region, parse_region

from tests.conftest import ROOT, rect_manifest

FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLI_FUZZ = dict(FUZZ, suppress_health_check=FUZZ["suppress_health_check"] + [HealthCheck.function_scoped_fixture])
SAFE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def _providers_manifest(region_id: str = "fz") -> dict:
    doc = rect_manifest(region_id, -33.92, 18.42, 380, 300, quota=40, imagery="providers")
    doc.pop("synthetic_world")
    return doc


BASES = [
    _providers_manifest(),
    rect_manifest("fz", -33.92, 18.42, 380, 300, quota=40),  # synthetic
    dict(_providers_manifest(), providers={"street": "mapillary", "aerial": "esri_world_imagery", "map": "osm"}, notes="n", source="s"),
    dict(_providers_manifest(), country="JP", continent="Asia", ocr_languages=[["ja", "en"], ["en"]]),
]

# --- strategies: manifests ------------------------------------------------------------------

huge_ints = st.sampled_from([400, -400, 20, 19, -19]).map(lambda e: 10**e if e > 0 else -(10**-e)) | st.sampled_from([63, 64]).map(lambda e: 2**e)
json_scalars = st.none() | st.booleans() | st.integers() | huge_ints | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)

NASTY_IDS = [
    "../x", "a/b", "", ".", "..", "../../etc/passwd", "a\\b", "/abs", "x" * 64, "a" * 63, "A", "Ab", "-a", "_a", "a..b", "a/..",
    "fz\n", "fz\r\n", "\nfz", "fz\x00", "fz ", " fz", "ü", "日本", "fz\u2028", "con", "a" * 10_000, "fz.json", "%2e%2e", "fz\t",
]
id_values = st.sampled_from(NASTY_IDS) | st.text(max_size=70) | st.from_regex(r"[a-z0-9][a-z0-9_-]{0,70}", fullmatch=True) | st.text(alphabet="az09./\\-_\n\x00é ", max_size=8)

coord = st.floats(-200, 200) | st.sampled_from([math.nan, math.inf, -math.inf, 180.0, -180.0, 90.0, -90.0, 1e308, 5e-324, 0.0, -0.0])
junk_coord = st.sampled_from([None, True, False, "8", "x", [], {}, [1], 10**400, [[8, 47]]]) | json_values
point = st.lists(coord, min_size=2, max_size=2) | st.lists(coord, min_size=1, max_size=4) | st.lists(coord | junk_coord, min_size=2, max_size=3) | junk_coord


@st.composite
def rectangles(draw) -> list:
    """Closed (or unclosed) rectangles anywhere, some tiny, some huge, some crossing a pole or the antimeridian."""
    lat = draw(st.floats(-95, 95))
    lon = draw(st.floats(-190, 190))
    plausible = draw(st.booleans())  # about 0.01..50,000 km², or anything
    dlat = draw(st.floats(0.002, 1.5) if plausible else st.floats(1e-7, 10))
    dlon = draw(st.floats(0.002, 1.5) if plausible else st.floats(1e-7, 10))
    ring = [[lon, lat], [lon + dlon, lat], [lon + dlon, lat + dlat], [lon, lat + dlat]]
    if draw(st.booleans()):
        ring.append(list(ring[0]))
    return [ring]


SPECIAL_RINGS = [
    [],
    [[]],
    [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],  # bow tie
    [[[18.4, -33.9], [18.41, -33.9], [18.41, -33.89]]],  # unclosed triangle
    [[[179.99, 0], [-179.99, 0], [-179.99, 0.01], [179.99, 0.01], [179.99, 0]]],  # antimeridian
    [[[-180, 89.9], [180, 89.9], [180, 90], [-180, 90], [-180, 89.9]]],  # polar cap
    [[[0, 89.6], [0.1, 89.6], [0.1, 89.7], [0, 89.6]]],  # beyond MAX_ABS_LAT
    [[[18.4, -33.9], [math.nan, -33.9], [18.41, -33.89], [18.4, -33.9]]],
    [[[18.4, -33.9], [math.inf, -33.9], [18.41, -33.89], [18.4, -33.9]]],
    [[[True, False], [True, True], [False, True], [True, False]]],
    [[["18.4", "-33.9"], ["18.41", "-33.9"], ["18.41", "-33.89"], ["18.4", "-33.9"]]],
    [[[18.4, -33.9, 1], [18.41, -33.9, 1], [18.41, -33.89, 1], [18.4, -33.9, 1]]],
    [[[18.4, -33.9, 1, 2], [18.41, -33.9, 1, 2], [18.41, -33.89, 1, 2], [18.4, -33.9, 1, 2]]],
    [[[18.4, -33.9], [18.41, -33.9], [18.41, -33.89], [18.4, -33.9]], [[9, 47], [9.01, 47], [9.01, 47.01], [9, 47]]],  # hole outside
    [[[18.4, -33.9], [18.41, -33.9], [18.41, -33.89], [18.4, -33.9]], 5],
    [[[[[[18.4, -33.9]]]]]],
    [[[10**400, 0], [1, 0], [1, 1], [10**400, 0]]],
    [[[0, 0], [1e-9, 0], [1e-9, 1e-9], [0, 0]]],  # too small
    [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]],  # too big
    [[{"x": 1}, {"y": 2}, {"z": 3}, {"w": 4}]],
    "abc",
    None,
    {"a": 1},
]


@st.composite
def random_rings(draw) -> list:
    """3-8 points scattered around a centre: often self-intersecting, sometimes fine."""
    lat, lon = draw(st.floats(-89, 89)), draw(st.floats(-179, 179))
    ring = [[lon + dx, lat + dy] for dx, dy in draw(st.lists(st.tuples(st.floats(-0.2, 0.2), st.floats(-0.2, 0.2)), min_size=3, max_size=8))]
    return [ring + [list(ring[0])]]


coordinates = st.sampled_from(SPECIAL_RINGS) | rectangles() | random_rings() | st.lists(st.lists(point, max_size=7), max_size=3) | json_values
polygon_values = (
    st.builds(lambda c: {"type": "Polygon", "coordinates": c}, coordinates)
    | st.builds(lambda c, t: {"type": t, "coordinates": c}, coordinates, st.sampled_from(["MultiPolygon", "Point", "polygon", "", None, 1, "LineString"]))
    | st.sampled_from([{"type": "Polygon"}, {"coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]], "crs": 4326}, [], "POLYGON((0 0,1 0,1 1,0 0))"])
    | json_values
)

OCR_POOL = [[], [[]], "en", ["en"], [["en", 1]], [["ja", "ko"]], [["ja", "ko", "en"]], [[None]], [["EN"]], [["en"], []], [["english!"]], [[["en"]]], [{"en": 1}], [["ru", "ar", "en"]], [["ch_sim", "en"]], [["en"] * 1000]]
ocr_values = st.sampled_from(OCR_POOL) | st.lists(st.lists(st.text(max_size=6) | st.sampled_from(["en", "de", "ja", "ar", "ru"]), max_size=4), max_size=3) | json_values
quota_values = st.integers() | huge_ints | st.integers(999_990, 1_000_010) | st.sampled_from([0, -1, 1, True, False, 1.0, 1.5, math.nan, math.inf, "40", None, 10**9, 10**1000]) | json_values
provider_values = (
    st.dictionaries(st.sampled_from(["street", "aerial", "map", "Street", "x", ""]), st.sampled_from(sorted(STREET_PROVIDERS) + sorted(AERIAL_PRESETS) + ["", "nope", "../x"]) | json_values, max_size=3)
    | st.sampled_from([{"street": ["mapillary"]}, {"aerial": {"a": 1}}, {"street": None}, {"map": ["osm"]}, [], "mapillary", None])
    | json_values
)
world_values = st.sampled_from([{}, {"seed": 0}, {"seed": -1}, {"seed": True}, {"seed": 1.5}, {"seed": 10**30}, {"seed": "1"}, {"seed": None}, {"x": 1}, [], "x", None]) | st.builds(lambda s: {"seed": s}, st.integers()) | json_values
FIELD_VALUES = {
    "id": id_values,
    "name": st.text() | st.sampled_from(["", "x" * 100_000]) | json_values,
    "country": st.sampled_from(["ZA", "JP", "QQ", "za", "Z", "ZAF", "", "AQ", "FR", "US"]) | st.text(max_size=3) | json_values,
    "continent": st.sampled_from(list(CONTINENTS) + ["Atlantis", "africa", ""]) | json_values,
    "polygon": polygon_values,
    "ocr_languages": ocr_values,
    "ocr_languages_unsupported": json_values,
    "quota": quota_values,
    "imagery": st.sampled_from(list(IMAGERY_SOURCES) + ["Synthetic", "", "file"]) | json_values,
    "synthetic_world": world_values,
    "providers": provider_values,
    "source": json_values,
    "notes": json_values,
}
unknown_keys = st.sampled_from(["qouta", "ID", "", "../x", "a\nb", "\x00", "polygon ", "x" * 500]) | st.text(max_size=12)


@st.composite
def mutated_manifests(draw) -> dict:
    """A valid manifest with one to four fields replaced, removed or added."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "set", "set", "delete", "unknown"]))
        if action == "unknown":
            doc[draw(unknown_keys)] = draw(json_values)
            continue
        key = draw(st.sampled_from(sorted(FIELD_VALUES)))
        if action == "delete":
            doc.pop(key, None)
        else:
            doc[key] = draw(FIELD_VALUES[key])
    return doc


manifest_docs = mutated_manifests() | st.dictionaries(st.sampled_from(sorted(KNOWN_FIELDS)) | st.text(max_size=6), json_values, max_size=8) | json_values


def _deep(n: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * n + close * n).encode()


GOOD_BYTES = json.dumps(BASES[0]).encode()
SPECIAL_BYTES = [
    b"", b"\xff\xfe", b"\xef\xbb\xbf" + GOOD_BYTES, GOOD_BYTES.decode().encode("utf-16"), b"[" * 100_000, _deep(5_000), b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b"1" * 5_000, b'{"quota": ' + b"9" * 5_000 + b"}", b"NaN", b"-Infinity", b'{"id": "\\ud800"}', b"\x00", b"null", b"[]", b'"fz"',
    GOOD_BYTES.replace(b'"fz"', b'"fz\xc3"'), GOOD_BYTES.replace(b"40", b"NaN"), GOOD_BYTES.replace(b"40", b"1e999"), GOOD_BYTES[:-1],
    GOOD_BYTES + b"x", *(json.dumps(dict(BASES[0], **{k: "__X__"})).replace('"__X__"', _deep(n).decode()).encode() for k in ("ocr_languages", "polygon", "providers") for n in (500, 900)),
]


@st.composite
def corrupted_json(draw) -> bytes:
    data = bytearray(json.dumps(draw(st.sampled_from(BASES))).encode())
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
            if not data:
                break
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


manifest_bytes = st.sampled_from(SPECIAL_BYTES) | st.binary(max_size=300) | corrupted_json() | manifest_docs.map(lambda d: json.dumps(d).encode())

# --- checks -----------------------------------------------------------------------------------


def assert_valid_region(r: Region, path: str) -> None:
    assert isinstance(r, Region) and r.source_path == path
    # The id becomes <output>/<id>/: it must be one plain path component.
    assert isinstance(r.id, str) and SAFE_ID.fullmatch(r.id), r.id
    assert "/" not in r.id and "\\" not in r.id and ".." not in r.id and r.id.isprintable()
    root = Path("/out")
    assert (root / r.id).parent == root and (root / r.id).name == r.id
    assert isinstance(r.quota, int) and not isinstance(r.quota, bool) and 0 < r.quota <= MAX_QUOTA  # float(quota) is used downstream
    assert r.continent in CONTINENTS and re.fullmatch(r"[A-Z]{2}", r.country)
    assert r.polygon.is_valid and not r.polygon.is_empty and r.polygon.area > 0
    minx, miny, maxx, maxy = r.polygon.bounds
    assert all(math.isfinite(v) for v in (minx, miny, maxx, maxy))
    assert -180 <= minx <= maxx <= 180 and -MAX_ABS_LAT <= miny <= maxy <= MAX_ABS_LAT and maxx - minx <= 180
    assert MIN_AREA_KM2 <= r.area_km2() <= MAX_AREA_KM2
    assert r.ocr_languages and all(g and all(isinstance(c, str) for c in g) for g in r.ocr_languages)
    assert r.imagery in IMAGERY_SOURCES
    assert all(isinstance(v, str) for v in r.providers.values())
    assert set(r.providers) <= {"street", "aerial", "map"}
    if r.synthetic_world is not None:
        seed = r.synthetic_world.seed
        assert isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0  # numpy seeds must be >= 0


def assert_clean_error(exc: CorebuildError, path: str, doc=None) -> None:
    msg = str(exc)
    assert msg and len(msg.splitlines()) == 1, msg
    assert isinstance(exc, ManifestError), repr(exc)
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)  # control characters escaped
    assert msg.startswith(f"{shown}: "), msg
    # The field named is a manifest field, one of the document's own keys, or the whole document.
    allowed = set(KNOWN_FIELDS) | {"<root>", "<json>", "<file>"} | (set(doc) if isinstance(doc, dict) else set())
    assert exc.field in allowed or exc.field.startswith("providers."), exc.field
    assert f": {exc.field}: " in msg or not exc.field.isprintable(), msg


def check_parse(doc, path: str = "x.json") -> None:
    try:
        region = parse_region(doc, path)
    except CorebuildError as exc:
        event(f"error: {exc.field if exc.field in KNOWN_FIELDS else 'other'}" if isinstance(exc, ManifestError) else "error")
        assert_clean_error(exc, path, doc)
    else:
        event("valid region")
        assert_valid_region(region, path)
        # Only JSON numbers are coordinates (not true/false, not "8.5").
        assert all(type(v) in (int, float) for ring in doc["polygon"]["coordinates"] for pos in ring for v in pos)


# --- 1. manifests -----------------------------------------------------------------------------


@settings(max_examples=400, **FUZZ)
@given(json_values)
def test_any_json_value_is_a_region_or_a_manifest_error(doc):
    check_parse(doc)


@settings(max_examples=1500, **FUZZ)
@given(mutated_manifests())
@example(dict(BASES[0], providers={"street": ["mapillary"]}))  # unhashable provider value: TypeError
@example(dict(BASES[0], providers={"aerial": {"a": 1}}))
@example(dict(BASES[0], id="fz\n"))  # `$` matched before a trailing newline
@example(dict(BASES[1], synthetic_world={"seed": -1}))  # numpy rejects negative seeds later
@example(dict(BASES[1], synthetic_world={"seed": True}))
@example(dict(BASES[0], quota=10**400))  # float(quota) overflows in sampling and estimates
@example(dict(BASES[0], polygon={"type": "Polygon", "coordinates": SPECIAL_RINGS[9]}))  # booleans as coordinates
@example(dict(BASES[0], polygon={"type": "Polygon", "coordinates": SPECIAL_RINGS[10]}))  # strings as coordinates
@example(dict(BASES[0], **{"a\nb": 1}))  # a field name that would break the message line
def test_mutated_manifests_are_a_region_or_a_manifest_error(doc):
    check_parse(doc)


@settings(max_examples=300, **FUZZ)
@given(mutated_manifests(), st.sampled_from(["x.json", "region_manifests/fz.json", "dir with space/fz.json", "bad\npath/fz.json"]))
def test_errors_name_the_file_they_came_from(doc, path):
    check_parse(doc, path)


@settings(max_examples=300, **FUZZ)
@given(polygon_values)
def test_fuzzed_polygons(polygon):
    check_parse(dict(BASES[0], polygon=polygon))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_manifests")


@settings(max_examples=800, **FUZZ)
@given(manifest_bytes)
@example(b"\xff\xfe")  # UnicodeDecodeError escaped
@example(b"[" * 100_000)  # RecursionError escaped
@example(b"1" * 5_000)  # ValueError: int digits limit
def test_manifest_bytes_load_or_fail_cleanly(fuzz_dir, data):
    path = fuzz_dir / "fz.json"
    path.write_bytes(data)
    try:
        region = load_region("fz", fuzz_dir)
    except CorebuildError as exc:
        assert_clean_error(exc, str(path), None if not data.startswith(b"{") else _try_json(data))
    else:
        assert_valid_region(region, str(path))
        assert region.id == "fz"


def _try_json(data: bytes):
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


@settings(max_examples=400, **FUZZ)
@given(id_values)
@example("fz\n")
def test_region_ids_cannot_leave_the_manifest_dir(fuzz_dir, region_id):
    (fuzz_dir / "fz.json").write_text(json.dumps(BASES[0]))
    try:
        region = load_region(region_id, fuzz_dir)
    except CorebuildError as exc:
        msg = str(exc)
        assert isinstance(exc, ManifestError) and len(msg.splitlines()) == 1 and exc.field in ("id", "<file>"), msg
    else:
        assert region_id == "fz" and region.id == "fz"


# --- 2. command lines ---------------------------------------------------------------------------

NUMS = ["0", "-0", "1", "-1", "2", "nan", "NaN", "inf", "-inf", "1e309", "-1e309", "1e-320", "1e308", "9" * 30, "-" + "9" * 30, "1e100", "abc", "", " ", "1.5", "0x10", "1_000", "٣", "+5", "1e3"]
good_ints, good_floats = st.integers(1, 500).map(str), st.floats(0, 1000).map(repr)
int_args = good_ints | good_ints | st.sampled_from(NUMS) | st.integers().map(str) | st.integers(-3, 5).map(str)
float_args = good_floats | good_floats | st.sampled_from(NUMS) | st.floats().map(repr) | st.floats(-10, 1000).map(repr)
PATHS = ["", ".", "..", "../x", "a/../../b", "/nonexistent/x", "x\x00y", "~", "gs://", "file://host/x", "file:///", "s3://b/x", "gs:///x", "a\nb"]
path_args = st.sampled_from(PATHS) | st.text(max_size=12)
URLS = ["", "http://", "https://", "ftp://x", "http://[::1", "http://127.0.0.1:0", "https://h/{z}/{x}/{y}.png", "https://h/{z}/{x}.png", "https://h/{key}/{z}/{x}/{y}", "{z}", "http://h/{q}", "javascript:alert(1)", "http://a b", "https://h/%zz", "\n"]
url_args = st.sampled_from(URLS) | st.text(max_size=12)
SECRETS = ["", "=", "K=", "=projects/p/secrets/s", "K=projects/", "K=projects/p/secrets/s", "K=projects/p/secrets/s/versions/1", "K=projects/P!/secrets/s", "K=projects/p/locations/eu/secrets/s",
           "K=hunter2", "K", "K=projects/p/secrets/s=x", "A B=projects/p/secrets/s", "K\n=projects/p/secrets/s", "K=projects/p/secrets/" + "s" * 300, "GOOGLE_MAPS_API_KEY=projects/p/secrets/s/versions/latest"]
text_args = st.text(max_size=10) | st.sampled_from(["", "../x", "a/b", "\n", "-", "--", "off", "sam", "clip", "vit_b", "openai", "vllm", "template", "easyocr", "rapidocr"])

BUILD_FLAGS = {
    "--seed": int_args, "--limit": int_args, "--min-spacing": float_args, "--workers": int_args, "--unit-points": int_args, "--shard-mb": float_args,
    "--ocr-threads": int_args, "--rate": float_args, "--concurrency": int_args,
    "--output": path_args, "--easyocr-dir": path_args, "--sam-checkpoint": path_args, "--clip-checkpoint": path_args, "--local-folder": path_args, "--cache": path_args,
    "--streetview-url": url_args, "--aerial-url": url_args, "--llm-url": url_args, "--mapillary-url": url_args,
    "--ocr-backend": text_args, "--segment": text_args, "--sam-model": text_args, "--labeler": text_args, "--describer": text_args, "--prompt": text_args | st.sampled_from(["template-v1", "cvg-progressive-v1", "../prompts/template-v1", "segment-vocabulary-v1"]),
    "--llm-model": text_args, "--llm-key-env": text_args, "--aerial-key-env": text_args, "--runner": text_args | st.sampled_from(["DirectRunner", "DataflowRunner", "prism"]),
    "--grounding": st.sampled_from(["fail", "remove", "off", "FAIL", "", "x"]),
    "--street-provider": st.sampled_from(sorted(STREET_PROVIDERS) + ["", "google", "../x"]) | text_args,
    "--aerial-preset": st.sampled_from(sorted(AERIAL_PRESETS) + ["", "nope"]) | text_args, "--map-preset": st.sampled_from(sorted(AERIAL_PRESETS) + ["", "nope"]) | text_args,
    "--secret": st.sampled_from(SECRETS) | st.text(max_size=12),
}
SWITCHES = ["--overwrite", "--no-progress", "--self-review"]
REGIONS = ["fz", "syn", "bad", "fuzzed", "missing", "../fz", "fz/", "FZ", "fz\n", "", "a/b", "-", "..", "."]


def _sane_config(cfg) -> None:
    """What the fake build asserts about any config the command line let through."""
    assert cfg.write.unit_points >= 1 and cfg.write.shard_bytes >= 1
    s = cfg.sample
    assert math.isfinite(s.min_spacing_m) and s.min_spacing_m >= 0
    assert s.limit is None or s.limit >= 0
    h = cfg.fetch.http
    assert math.isfinite(h.rate_per_s) and h.rate_per_s >= 0 and h.concurrency >= 1
    assert cfg.ocr.threads >= 0 and cfg.runner.direct_num_workers >= 1
    for env, name in cfg.fetch.secret_names:
        assert env and name.startswith("projects/")


def _fake_run_build(cfg, pipeline_factory=None, overwrite=False, progress=True, retry_failed=None):
    """The launcher's cheap checks (manifest, providers, config hash, prompt), then no build."""
    from corebuild.running.build import resolve_providers
    from corebuild.stages.describe.prompts import load_prompt
    from corebuild.stages.sample import SamplingPlan

    region = load_region(cfg.region_id, cfg.manifests_dir)
    cfg = resolve_providers(cfg, region)
    _sane_config(cfg)
    assert SamplingPlan(region, cfg.sample).wanted >= 0
    cfg.content_hash()
    load_prompt(cfg.describe.prompts_dir, cfg.describe.prompt_id)
    return SimpleNamespace(summary=f"{region.id}: checked", transient=0)


@pytest.fixture(scope="module")
def cli_manifests(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli_manifests")
    (d / "fz.json").write_text(json.dumps(BASES[0]))
    (d / "syn.json").write_text(json.dumps(rect_manifest("syn", -33.92, 18.42, 380, 300, quota=40)))
    (d / "bad.json").write_text('{"id": "bad", "quota": ')
    return d


@pytest.fixture
def no_build(monkeypatch):
    import corebuild.running.build

    monkeypatch.setattr(corebuild.running.build, "run_build", _fake_run_build)
    monkeypatch.chdir(ROOT)  # relative paths in the fuzzed flags mean the checkout (prompts are package data)


def _event(text: str) -> None:
    try:
        event(text)
    except InvalidArgument:  # outside a hypothesis test
        pass


def run_cli(argv: list[str], capsys) -> int:
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse: usage error (2) or --help (0), its own usage text
        err = capsys.readouterr().err
        _event(f"{argv[0]} argparse exit {exc.code}")
        assert exc.code in (0, 2) and "Traceback" not in err, err
        return exc.code
    out = capsys.readouterr()
    _event(f"{argv[0]} exit {rc}")
    assert "Traceback" not in out.err and "Traceback" not in out.out
    if argv[0] == "regions":  # one line per bad manifest, then (check: exit 1) how many
        assert rc in (0, 1, 2), (rc, out.err)
        assert all(line.startswith("error: ") or line.endswith("invalid manifest(s)") for line in out.err.splitlines()), out.err
        return rc
    assert rc in (0, 2), (rc, out.err)
    if rc == 2:
        lines = out.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    return rc


@st.composite
def build_argvs(draw) -> tuple[list[str], object]:
    argv = ["build"]
    region = draw(st.sampled_from(["fz"] * 8 + ["syn", "fuzzed", "fuzzed"] + REGIONS)) if draw(st.integers(0, 4)) else draw(id_values)
    argv.append(f"--region={region}")
    argv.append(draw(st.sampled_from(["--manifests={m}"] * 6 + ["--manifests={m}/..", "--manifests=/nonexistent", "--manifests={m}/fz.json"])))
    for flag in draw(st.lists(st.sampled_from(sorted(BUILD_FLAGS)), max_size=4)):
        argv.append(f"{flag}={draw(BUILD_FLAGS[flag])}")
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    if draw(st.integers(0, 9)) == 0:
        argv += ["--", *draw(st.lists(st.sampled_from(["--project=p", "--region=x", "junk", "--"]), max_size=2))]
    fuzzed = draw(st.none() | mutated_manifests())  # written as fuzzed.json
    return argv, fuzzed


def _materialize(argv: list[str], fuzzed, manifests: Path) -> list[str]:
    if fuzzed is not None:
        if fuzzed.get("id") == "fz":
            fuzzed = dict(fuzzed, id="fuzzed")
        (manifests / "fuzzed.json").write_text(json.dumps(fuzzed))
    elif (manifests / "fuzzed.json").exists():
        (manifests / "fuzzed.json").unlink()
    return [a.replace("{m}", str(manifests)) for a in argv]


@settings(max_examples=1200, **CLI_FUZZ)
@given(build_argvs())
@example((["build", "--region=fz", "--manifests={m}", "--shard-mb=nan"], None))  # int(nan) ValueError
@example((["build", "--region=fz", "--manifests={m}", "--shard-mb=1e308"], None))  # int(inf) OverflowError
@example((["build", "--region=fz", "--manifests={m}", "--min-spacing=nan"], None))
@example((["build", "--region=fz", "--manifests={m}", "--rate=-1"], None))
@example((["build", "--region=fz", "--manifests={m}", "--concurrency=0"], None))
@example((["build", "--region=fz", "--manifests={m}", "--limit=-5"], None))
@example((["build", "--region=fz", "--manifests={m}", "--secret=K=projects/"], None))
@example((["build", "--region=fz\n", "--manifests={m}"], None))
@example((["build", "--region=fuzzed", "--manifests={m}"], dict(BASES[0], id="fuzzed", quota=10**400)))
def test_build_command_lines_fail_cleanly_or_pass_a_sane_config(no_build, capsys, cli_manifests, case):
    argv, fuzzed = case
    run_cli(_materialize(argv, fuzzed, cli_manifests), capsys)


def test_the_fake_build_accepts_a_plain_command_line(no_build, capsys, cli_manifests):
    assert run_cli(["build", "--region=fz", f"--manifests={cli_manifests}"], capsys) == 0


SPLITS_FLAGS = {
    "--scheme": st.sampled_from(["blocks", "continents", "x", ""]), "--block-km": float_args, "--ratios": st.sampled_from(["0.8,0.1,0.1", "1,0,0", "0,0,1", "a,b,c", "0.5,0.5", "nan,0,1", "inf,0,0", ",,", "-1,1,1"]) | st.text(max_size=8),
    "--min-distance-m": float_args, "--seed": int_args, "--test-continents": st.sampled_from(["Africa", "Africa,Europe", "Atlantis", ",", ""]) | st.text(max_size=8),
    "--val-continents": st.sampled_from(["Asia", "Africa", ""]) | st.text(max_size=8), "--out": path_args, "--name": st.sampled_from(["../x", "a/b", ".hidden", "", "ok"]) | st.text(max_size=8),
}
INSPECT_FLAGS = {"--out": path_args, "--gallery": int_args, "--seed": int_args}
ESTIMATE_FLAGS = {
    "--regions": st.sampled_from(["fz"] * 6 + ["fuzzed"] * 3 + ["all", "fz", "fz,syn", "fz,fz", "bad", "fuzzed", "missing", "", ",", "../fz", "syn"]) | st.text(max_size=8), "--street-provider": st.sampled_from(sorted(STREET_PROVIDERS) + ["x"]),
    "--aerial-preset": st.sampled_from(sorted(AERIAL_PRESETS) + ["x", ""]), "--map-preset": st.sampled_from(sorted(AERIAL_PRESETS) + ["x", ""]),
    "--describer": st.sampled_from(["vllm", "openai", "template", "x"]), "--segment": st.sampled_from(["off", "sam", "x"]), "--gpu-tokens-per-s": float_args,
    "--gpu-type": st.sampled_from(["nvidia-l4", "x", ""]), "--manifests": st.sampled_from(["{m}", "{m}", "/nonexistent", "{m}/fz.json"]),
}


@st.composite
def other_argvs(draw) -> tuple[list[str], object]:
    command = draw(st.sampled_from(["splits", "inspect", "estimate", "regions"]))
    if command == "regions":
        manifests = draw(st.sampled_from(["{m}", "{m}", "/nonexistent", "{m}/fz.json", ""]))
        return ["regions", draw(st.sampled_from(["list", "check", "nope"])), f"--manifests={manifests}"], draw(st.none() | mutated_manifests())
    argv = [command]
    if command != "estimate":
        # Local paths only: a gs:// bucket would reach for the network.
        argv.append(draw(st.sampled_from(["{m}", "{m}/empty", "/nonexistent/build", "gs://", "file://host/x", "", "{m}/fz.json"])))
    flags = {"splits": SPLITS_FLAGS, "inspect": INSPECT_FLAGS, "estimate": ESTIMATE_FLAGS}[command]
    for flag in draw(st.lists(st.sampled_from(sorted(flags)), max_size=5)):
        value = draw(flags[flag])
        if flag == "--out" and command != "estimate":
            value = "{m}/out/" + value  # never write outside the temporary folder
        argv.append(f"{flag}={value}")
    if command == "estimate" and not any(a.startswith("--manifests=") for a in argv):
        argv.append("--manifests={m}")
    if draw(st.integers(0, 4)) == 0:
        argv.append("--json" if command == "estimate" else "--unknown-flag")
    return argv, draw(st.none() | mutated_manifests())


@settings(max_examples=600, **CLI_FUZZ)
@given(other_argvs())
@example((["estimate", "--regions=fuzzed", "--manifests={m}"], dict(BASES[0], id="fuzzed", quota=10**400)))  # float(quota) OverflowError
@example((["estimate", "--regions=fuzzed", "--manifests={m}"], dict(BASES[0], id="fuzzed", providers={"street": ["x"]})))
def test_splits_inspect_estimate_regions_command_lines_fail_cleanly(no_build, capsys, cli_manifests, case):
    argv, fuzzed = case
    (cli_manifests / "empty").mkdir(exist_ok=True)
    run_cli(_materialize(argv, fuzzed, cli_manifests), capsys)


def test_estimate_rejects_a_nan_gpu_rate(no_build, capsys, cli_manifests):
    assert run_cli(["estimate", "--regions=fz", f"--manifests={cli_manifests}", "--gpu-tokens-per-s=nan"], capsys) == 2
