"""`corebuild eval fidelity`: claims taken from descriptions, checked against the synthetic world."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corebuild.eval import fidelity
from corebuild.eval.fidelity import Claim, camera_truth, check_row, extract_claims, summarise
from tests.builds import fake_rows

PANO = "SYN3R9K45"  # a camera of the tiny town (seed 3) that sees a sign, a park, the lake and trees
HEADINGS = (0.0, 90.0, 180.0, 270.0)
# True and false claims of each type for PANO (see test_the_camera_sees_what_the_description_assumes).
DESCRIPTION = (
    "Street-level scene in Test tiny, ZA. "
    'Facing north: a red building ahead, a blue building on the left, a sign reading "BOREAL BANK" ahead, trees line the view. '  # red T, blue F, sign T, trees T
    "Facing east: a white building on the right, a beige building ahead, a white building on the left, trees line the view. "  # white T, beige T,
    # white F (white shows in that view, but on the right), trees F
    'Facing south: a white building on the left, a purple building on the right, a sign reading "KAPPA OPTICS" on the left, '  # white T, purple F, sign T
    'a sign reading "ZEN NOWHERE" ahead. Facing west: trees line the view. '  # sign F, trees T
    "To the west lies a lake. There is no water to the east. Facing south: the lake is visible. "  # water T, T (negated), F
    "A park opens to the south, and there is no park to the west. Facing east: a small park. "  # park T, T (negated), F
    'A sign reads "KAPPA OPTICA".'  # sign F (a misreading of KAPPA OPTICS)
)
PARTS = json.dumps({"signs": ["KAPPA OPTICS", "BOREAL"]})  # a repeat (not counted twice), a partial reading (F)


@pytest.fixture(scope="module")
def truth(tiny_world):
    pano = tiny_world.pano(PANO)
    return camera_truth(tiny_world, (pano.x, pano.y), [{"heading": h} for h in HEADINGS])


def test_the_camera_sees_what_the_description_assumes(truth):
    north, east, south, west = truth.views
    assert max(north.side_colours["ahead"], key=north.side_colours["ahead"].get) == "red" and not north.side_colours["left"]
    assert "BOREAL BANK" in north.signs and truth.clean == {"KAPPA OPTICS"}
    assert (north.trees, east.trees, west.trees) == (True, False, True)
    assert max(east.side_colours["right"], key=east.side_colours["right"].get) == "white" and set(east.side_colours["ahead"]) == {"beige"}
    assert "white" in south.colours and "purple" not in south.side_colours["right"]
    assert (west.water, east.water, south.water) == (True, False, False)
    assert (south.park, west.park, east.park) == (True, False, False)


def test_precision_and_recall_per_claim_type(tiny_world, truth):
    row = {"sample_id": "r1", "pano_id": PANO, "description": DESCRIPTION, "description_parts": PARTS}
    result = check_row(row, tiny_world, truth, {s.text for s in tiny_world.signs}, ("Test tiny",))
    report = summarise([result], worst=1)
    claims = report["claims"]
    got = {k: (v["claims"], v["true"]) for k, v in claims.items()}
    assert got == {"sign_text": (5, 2), "building_colour": (7, 4), "trees": (3, 2), "water": (3, 2), "park": (3, 2)}
    assert claims["sign_text"]["recall"] == 1.0 and claims["sign_text"]["clean_signs"] == 1
    assert (claims["sign_text"]["misread"], claims["sign_text"]["partial"]) == (1, 1)
    assert claims["sign_text"]["precision_lenient"] == 0.8
    assert (claims["building_colour"]["sided_claims"], claims["building_colour"]["dominant"]) == (7, 4)
    assert claims["sign_text"]["false_by_reason"] == {"no_such_sign": 1, "misread": 1, "partial": 1}
    assert claims["building_colour"]["false_by_reason"] == {"not_in_view": 2, "other_side": 1}
    assert report["overall"] == {"claims": 21, "true": 12, "precision": 0.5714}
    # trees show facing north, south and west; claimed north, east and west
    assert (claims["trees"]["views_showing"], claims["trees"]["recall"], claims["water"]["recall"]) == (3, 0.6667, 1.0)
    false = {f["claim"] for f in report["worst"][0]["false_claims"]}
    assert false == {
        'sign "ZEN NOWHERE" facing south', 'sign "KAPPA OPTICA"', 'sign "BOREAL"', "blue building facing north left", "purple building facing south right", "white building facing east left",
        "trees facing east", "water facing south", "park facing east",
    }

    # Recall: a description that names no sign recalls none of the clean ones.
    quiet = check_row({"sample_id": "r2", "pano_id": PANO, "description": "Facing south: a white building on the left."}, tiny_world, truth)
    assert summarise([quiet], 1)["claims"]["sign_text"]["recall"] == 0.0


def _template_text(body: dict) -> str:
    s = body["sides"]
    views = [
        ("north", [body["building"].format(colour="red", side=s["left"]), body["open_ahead"], body["trees"],
                   body["sign"].format(text="LUNA CAFE", side=s["right"])]),
        ("east", [body["building"].format(colour="blue", side=s["ahead"]), body["building"].format(colour="beige", side=s["right"])]),
        ("south", []),
        ("west", [body["sign"].format(text="BLUE BANK", side=s["ahead"])]),
    ]
    out = [body["intro"].format(region="Lakeside", country="CH")]
    out += [body["view"].format(direction=d, parts=", ".join(p) or body["nothing"]) for d, p in views]
    return " ".join(out + [body["no_text"]])


def test_claims_from_template_sentences(prompts_dir):
    body = json.loads((prompts_dir / "template-v1.json").read_text())
    claims = extract_claims(_template_text(body), ignore=("Lakeside",))
    assert claims == [
        Claim("sign_text", "LUNA CAFE", 0.0),  # a sentence's signs come first
        Claim("building_colour", "red", 0.0, "left"),
        Claim("trees", "", 0.0),
        Claim("building_colour", "blue", 90.0, "ahead"),
        Claim("building_colour", "beige", 90.0, "right"),
        Claim("sign_text", "BLUE BANK", 270.0),  # a colour word inside sign text is no building colour
    ]


def test_claims_from_free_text():
    text = (
        'Looking west, white and pink houses line the street, and a grey tower rises ahead. The corner shop has a sign reading "BLUE BAR". '
        "Behind the camera, facing north, there are red-roofed homes on the right. There is no lake. Trees shade the sidewalk. "
        'Facing east: a sign reading "ST. JOHN PARK". A pink building.'
    )
    claims = extract_claims(text, json.dumps({"signs": ["BLUE BAR", "ZEN DELI"]}))
    assert claims == [
        Claim("building_colour", "white", 270.0),
        Claim("building_colour", "pink", 270.0),
        Claim("building_colour", "grey", 270.0, "ahead"),
        Claim("sign_text", "BLUE BAR"),  # and no blue shop: the colour is the sign's text
        Claim("building_colour", "red", 0.0, "right"),
        Claim("water", "", None, None, negated=True),
        Claim("trees", ""),
        Claim("sign_text", "ST. JOHN PARK", 90.0),  # neither a sentence's end nor a park
        Claim("building_colour", "pink"),
        Claim("sign_text", "ZEN DELI", source="parts"),
    ]


def test_labels_match_the_rendered_view(tiny_world):
    """The label image is drawn as render_street draws the view: the lake's pixels are water and
    a building's pixels its facade colour (one of the wall shades)."""
    from corebuild.synthetic.render import WATER, Camera, _shade, render_street

    pano = tiny_world.pano(PANO)
    ok = total = 0
    for heading in (0.0, 90.0, 270.0):
        cam = Camera(pano.x, pano.y, heading, 90.0, 0.0, 160, 160)
        labels = fidelity._label_view(tiny_world, cam)
        img = np.asarray(render_street(tiny_world, cam)).reshape(-1, 3)
        flat = labels.reshape(-1)
        water = flat == fidelity._WATER
        if heading == 270.0:
            assert water.sum() > 50 and (img[water] == WATER).all(axis=1).mean() > 0.95
        building = (flat >= fidelity._BUILDING) & (flat < fidelity._SIGN)
        total += int(building.sum())
        for px, label in zip(img[building], flat[building]):
            rgb = tiny_world.buildings[int(label) - fidelity._BUILDING].facade_rgb
            ok += any(tuple(px) == _shade(rgb, f) for f in (1.0, 0.88, 0.82, 0.6, 0.528, 0.492))
    assert total > 2000 and ok / total > 0.9


def test_a_sign_shows_from_its_front_not_from_behind_its_building(tiny_world):
    sign = tiny_world.signs[0]
    cx, cy, _ = sign.center
    nx, ny = sign.normal
    front = fidelity.view_truth(tiny_world, cx + nx * 14, cy + ny * 14, math.degrees(math.atan2(-nx, -ny)) % 360)
    assert sign.text in front.signs and sign.text in front.clean
    x0, y0, x1, y1 = tiny_world.buildings[sign.building_id].footprint.bounds
    depth = abs(nx) * (x1 - x0) + abs(ny) * (y1 - y0)
    bx, by = cx - nx * (depth + 1.0), cy - ny * (depth + 1.0)  # just behind the back wall, facing it
    back = fidelity.view_truth(tiny_world, bx, by, math.degrees(math.atan2(nx, ny)) % 360)
    assert back.side_colours["ahead"] and sign.text not in back.signs


def _write_build(root, manifests_dir, rows):
    from corebuild.shards.manifest import count_shards
    from corebuild.shards.schema import shard_schema
    from corebuild.shards.storage import open_storage

    storage = open_storage(str(root))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=shard_schema()), buf, compression="zstd")
    storage.write("shards/part-u00000-000.parquet", buf.getvalue())
    counts = count_shards(storage, ["shards/part-u00000-000.parquet"])
    manifest = {
        "build_id": "tiny-test", "region_id": "tiny",
        "region": {"name": "Test tiny", "country": "ZA", "continent": "Africa", "manifest": str(manifests_dir / "tiny.json")},
        "models": {"describer": "template:template", "prompt": {"id": "template-v1"}},
        "counts": {k: v for k, v in counts.items() if k != "shards"}, "consistent": True, "shards": counts["shards"],
    }
    storage.write("manifest.json", json.dumps(manifest).encode())


def test_cli_on_a_small_build(tmp_path, manifests_dir, tiny_world, capsys):
    from corebuild.cli import main

    pano = tiny_world.pano(PANO)
    rows = fake_rows("tiny", pano.lat, pano.lon, 3, fail_every=3)
    rows[0].update(pano_id=PANO, street_lat=pano.lat, street_lon=pano.lon, description=DESCRIPTION, description_parts=PARTS)
    rows[1].update(pano_id="SYN99R1K1", description="Facing north: a red building ahead.")  # another world's pano
    for view in rows[0]["street_views"]:
        view.update(width=640, height=640)
    build = tmp_path / "tiny"
    _write_build(build, manifests_dir, rows)
    assert main(["eval", "fidelity", str(build), "--worst", "1"]) == 0
    report = json.loads((build / "eval" / "fidelity.json").read_text())
    assert (report["kept_rows"], report["rows_checked"], report["rows_skipped"]) == (2, 1, {"pano_of_another_world": 1})
    assert report["overall"] == {"claims": 21, "true": 12, "precision": 0.5714}
    assert report["world"] == {"seed": 3, "script": "latin"} and report["describer"] == "template:template"
    assert report["worst"][0]["sample_id"] == rows[0]["sample_id"] and len(report["worst"][0]["false_claims"]) == 9
    out = capsys.readouterr().out
    assert "building_colour" in out and "0.571" in out and "wrote" in out

    other = tmp_path / "report.json"
    assert main(["eval", "fidelity", str(build), "--out", str(other)]) == 0
    assert json.loads(other.read_text())["overall"]["claims"] == 21 and math.isclose(json.loads(other.read_text())["claims"]["sign_text"]["precision"], 0.4)
