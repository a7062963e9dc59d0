"""`corebuild inspect` (corebuild.dataset.report) on generated two-region builds: the HTML parses, every
image resolves and decodes, OCR boxes and aerial markers land where they should, tables match
the manifests, untrusted text is escaped, and (where Chromium is installed) the page renders."""

from __future__ import annotations

import json
import argparse
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corebuild.dataset.reader import find_builds
from corebuild.errors import CorebuildError
from corebuild.dataset.report import add_arguments, main, write_report
from corebuild.dataset.stats import text_stats
from tests import builds

EVIL = "<script>alert(1)</script> & \"quotes\""
EVIL_OCR = "<img src=x onerror=alert(2)>"
D = 0.0005  # the generated crops' half-width in degrees (tests/builds.py)
SHORTFALL = "yield 76% and candidates exhausted after 5 rounds"


class Page(HTMLParser):
    """Tags with attributes, the coverage SVGs' circles per region, and the text outside tags."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.circles: dict[str, list[dict[str, str]]] = {}
        self.text: list[str] = []
        self._svg: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "svg":
            self._svg = a.get("data-region") if "coverage" in a.get("class", "") else a.get("class", "")
            self.circles.setdefault(self._svg, [])
        elif tag == "circle" and self._svg is not None:
            self.circles[self._svg].append(a)

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **want: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in want.items())]


def _rows_with_specials(region_id, *args, **kw):
    rows = _original_fake_rows(region_id, *args, **kw)
    if region_id == "za-a":
        rows[0]["description"] = EVIL
        rows[0]["ocr"] = rows[0]["ocr"] + [{"heading": 90.0, "text": EVIL_OCR, "confidence": 0.5, "box": [40.0, 40.0, 60.0, 40.0, 60.0, 56.0, 40.0, 56.0], "dropped": "on_car"}]
        rows[1]["street_lon"] = rows[1]["lon"] + D / 2  # camera at 3/4 of the crop's width, same row
        rows[3].update(aerial_west=rows[3]["lon"] + D, aerial_east=rows[3]["lon"] + 3 * D)  # the point half a crop west of it
    return rows


_original_fake_rows = builds.fake_rows


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("builds")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builds, "fake_rows", _rows_with_specials)
        builds.write_fake_build(root, "za-a", -33.92, 18.42, 23, rows_per_shard=10, quota=builds.quota_block(23, rounds=2, trimmed=3))
        builds.write_fake_build(
            root, "ke-b", -1.28, 36.82, 17, country="KE", seed=1, fail_every=4, spread_m=800.0, quota=builds.quota_block(17, 4, quota=20, rounds=5, shortfall=SHORTFALL)
        )
    out = tmp_path_factory.mktemp("report")
    index = write_report(root, out / "all", gallery=1000)
    small = write_report(root / "za-a", out / "small", gallery=5, seed=3)
    return root, index, small


def _page(index: Path) -> Page:
    return Page(index.read_text(encoding="utf-8"))


def _kept(root: Path) -> dict[str, dict]:
    """Kept rows of every region by sample id, as stored."""
    out = {}
    for b in find_builds(str(root)):
        for name in b.shard_names():
            for r in b.read_table(name).to_pylist():
                if r["status"] == "kept":
                    out[r["sample_id"]] = r
    return out


def _img(index: Path, src: str) -> np.ndarray:
    return np.asarray(Image.open(index.parent / src).convert("RGB")).astype(int)


def _item_imgs(page: Page, index: Path, sample_id: str) -> list[dict[str, str]]:
    """The <img> tags between this item's <div> and the next item's."""
    start = next(i for i, (t, a) in enumerate(page.tags) if t == "div" and a.get("data-sample") == sample_id)
    out = []
    for t, a in page.tags[start + 1 :]:
        if t == "div" and "data-sample" in a:
            break
        if t == "img":
            out.append(a)
    return out


def test_every_image_resolves_and_decodes_and_nothing_is_external(built):
    _, index, small = built
    for ix in (index, small):
        page = _page(ix)
        srcs = [a["src"] for a in page.find("img")] + [a["href"] for a in page.find("image")]
        assert srcs and all(s.startswith("img/") for s in srcs)  # relative, no data: or http:
        for s in srcs:
            with Image.open(ix.parent / s) as im:
                im.load()
        assert not page.find("script") and not page.find("link")  # no JS, no outside CSS
        assert "http://" not in ix.read_text() and "https://" not in ix.read_text()


def test_gallery_has_the_asked_number_of_seeded_items(built, tmp_path):
    root, index, small = built
    kept = _kept(root)
    assert {a["data-sample"] for a in _page(index).find("div", **{"class": "item"})} == set(kept)  # gallery > kept: all of them
    five = [a["data-sample"] for a in _page(small).find("div", **{"class": "item"})]
    assert len(five) == 5 and all(s.startswith("za-a-") for s in five)
    again = write_report(root / "za-a", tmp_path / "again", gallery=5, seed=3)
    assert [a["data-sample"] for a in _page(again).find("div", **{"class": "item"})] == five
    # 4 views + 1 aerial per item, and no image left over from another report in the folder
    assert len(list((small.parent / "img").glob("*.jpg"))) == 5 * 5


def test_images_are_read_only_for_the_picked_rows(built, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    root, _, _ = built
    calls: list[tuple[str, int, list[str]]] = []
    read, read_groups = pq.ParquetFile.read, pq.ParquetFile.read_row_groups

    def spy_read(self, columns=None, **kw):
        t = read(self, columns=columns, **kw)
        calls.append(("read", t.num_rows, list(columns or [])))
        return t

    def spy_groups(self, groups, columns=None, **kw):
        t = read_groups(self, groups, columns=columns, **kw)
        calls.append(("groups", t.num_rows, list(columns or [])))
        return t

    monkeypatch.setattr(pq.ParquetFile, "read", spy_read)
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy_groups)
    write_report(root / "za-a", tmp_path / "r", gallery=2, seed=1)
    light = [c for c in calls if c[0] == "read"]
    heavy = [c for c in calls if c[0] == "groups"]
    assert len(light) == 3 and all("street_views" not in cols and "aerial_image" not in cols for _, _, cols in light)
    assert 1 <= len(heavy) <= 2 and sum(n for _, n, _ in heavy) <= 2 * 4  # the picked rows' 4-row groups, not 23 rows


def test_ocr_boxes_are_drawn_on_the_views(built):
    root, index, _ = built
    page, row = _page(index), _kept(root)["za-a-s0-0"]
    imgs = {a.get("data-heading"): a["src"] for a in _item_imgs(page, index, "za-a-s0-0") if a.get("class") == "view"}
    assert set(imgs) == {"0", "90", "180", "270"}
    for heading, (x1, y1, x2, y2), colour in (("0", (8, 8, 32, 21), (255, 221, 0)), ("90", (40, 40, 60, 56), (255, 0, 255))):
        orig = np.asarray(Image.open(io.BytesIO(next(v["image"] for v in row["street_views"] if v["heading"] == float(heading)))).convert("RGB")).astype(int)
        drawn = _img(index, imgs[heading])
        outline = np.zeros(orig.shape[:2], bool)
        outline[y1, x1:x2], outline[y2, x1:x2], outline[y1:y2, x1], outline[y1:y2, x2] = True, True, True, True
        assert np.abs(drawn - orig)[outline].mean() > 60  # the polygon is there
        assert np.abs(drawn[outline] - colour).mean() < 60  # evidence yellow, dropped magenta
    # away from the boxes and labels the view is the original (up to JPEG re-encoding)
    orig0 = np.asarray(Image.open(io.BytesIO(row["street_views"][0]["image"])).convert("RGB")).astype(int)
    assert np.abs(_img(index, imgs["0"]) - orig0)[44:62, 36:62].mean() < 8


def _centroid(a: np.ndarray, rgb: tuple[int, int, int]) -> tuple[float, float]:
    ys, xs = np.nonzero(np.abs(a - rgb).sum(axis=2) < 120)
    assert len(xs), f"no {rgb} pixels"
    return float(xs.mean()), float(ys.mean())


def test_aerial_markers_are_at_the_point_and_the_camera(built):
    _, index, _ = built
    page = _page(index)
    for sid, camera in (("za-a-s0-0", None), ("za-a-s0-1", (48, 32))):
        aerial = _img(index, next(a["src"] for a in _item_imgs(page, index, sid) if a.get("class") == "aerial"))
        assert aerial.shape[:2] == (64, 64)
        x, y = _centroid(aerial, (255, 0, 0))  # the sampled point is the crop's centre
        assert abs(x - 32) <= 1 and abs(y - 32) <= 1
        if camera:
            x, y = _centroid(aerial, (0, 120, 255))
            assert abs(x - camera[0]) <= 1 and abs(y - camera[1]) <= 1
    # a point outside the crop: said so, and a ring on the edge towards it (west)
    item = index.read_text().split('data-sample="za-a-s0-3"', 1)[1].split('<div class="item"', 1)[0]
    assert "point outside the crop" in item and "point outside the crop" not in index.read_text().split('data-sample="za-a-s0-3"', 1)[0]
    x, y = _centroid(_img(index, next(a["src"] for a in _item_imgs(page, index, "za-a-s0-3") if a.get("class") == "aerial")), (255, 0, 0))
    assert x < 8 and abs(y - 32) <= 1


def test_failure_table_matches_the_manifests(built):
    root, index, _ = built
    page = _page(index)
    cells = {(a["data-region"], a["data-col"]): a for a in page.find("td") if "data-region" in a}
    text = index.read_text()

    def value(region: str, col: str) -> int:
        # the cell's first number: <td ... data-region=R data-col=C>N<br>...
        tag = f'data-region="{region}" data-col="{col}">'
        return int(text.split(tag, 1)[1].split("<", 1)[0])

    total: dict[str, int] = {}
    for b in find_builds(str(root)):
        c = b.manifest["counts"]
        assert c["failed_by_reason"]
        for col in ("sampled", "kept", "failed"):
            assert value(b.region_id, col) == c[col]
            total[col] = total.get(col, 0) + c[col]
        for why, n in c["failed_by_reason"].items():
            assert (b.region_id, why) in cells and value(b.region_id, why) == n
            assert f'data-region="{b.region_id}" data-col="{why}">{n}<br><small>{100 * n / c["sampled"]:.1f}%</small>' in text
            total[why] = total.get(why, 0) + n
    assert all(value("*total*", col) == n for col, n in total.items())


def _cells(index: Path) -> dict[tuple[str, str], str]:
    """(data-region, data-col) -> the cell's text, for the quota table's cells."""
    page, out, key = Page(index.read_text(encoding="utf-8")), {}, None

    class Cells(HTMLParser):
        def handle_starttag(self, tag, attrs):
            nonlocal key
            a = dict(attrs)
            key = (a["data-region"], a["data-col"]) if tag == "td" and (a.get("data-col") or "").startswith("quota.") else None

        def handle_data(self, data):
            if key is not None:
                out[key] = out.get(key, "") + data

        def handle_endtag(self, tag):
            nonlocal key
            key = None

    Cells().feed(index.read_text(encoding="utf-8"))
    assert page.find("table", **{"class": "quota"})
    return out


def test_quota_table_shows_the_manifests_quota_blocks(built):
    root, index, _ = built
    cells = _cells(index)
    # za-a: 23 sampled, 19 kept, quota met in 2 rounds; ke-b: 17 sampled, 13 kept of 20, a shortfall
    want = {
        "za-a": {"quota": "19", "target": "19", "of": "kept", "kept": "19", "sampled": "23", "rounds": "2", "yield": "82.6%", "missing": "0", "trimmed": "3", "shortfall": "none"},
        "ke-b": {"quota": "20", "kept": "13", "sampled": "17", "rounds": "5", "yield": "76.5%", "expected_yield": "50%", "missing": "7", "shortfall": SHORTFALL},
        "*total*": {"quota": "39", "kept": "32", "sampled": "40", "yield": "80.0%", "rounds": "–", "shortfall": "1 region(s)"},
    }
    for rid, cols in want.items():
        for col, v in cols.items():
            assert cells[(rid, f"quota.{col}")] == v, (rid, col)
    for b in find_builds(str(root)):  # the figures are the manifests'
        q = b.manifest["quota"]
        assert (cells[(b.region_id, "quota.kept")], cells[(b.region_id, "quota.sampled")]) == (str(q["kept"]), str(q["sampled"]))


def test_a_build_without_a_quota_block_renders(built, tmp_path):
    root, _, _ = built
    builds.write_fake_build(tmp_path / "old", "za-old", -33.92, 18.42, 10, rows_per_shard=5)
    for src in (tmp_path / "old" / "za-old", root / "za-a"):  # alone, and next to a build with the block
        shutil.copytree(src, tmp_path / "mixed" / src.name)
    for where in ("old", "mixed"):
        cells = _cells(write_report(tmp_path / where, tmp_path / f"r-{where}", gallery=1))
        # kept and sampled from counts (8 of 10), the rest not recorded
        assert [cells[("za-old", f"quota.{c}")] for c in ("quota", "kept", "sampled", "rounds", "yield", "shortfall")] == ["–", "8", "10", "–", "80.0%", "–"]
    assert cells[("*total*", "quota.quota")] == "–" and cells[("*total*", "quota.kept")] == "27" and cells[("*total*", "quota.shortfall")] == "–"  # not known for the old one
    assert cells[("za-a", "quota.shortfall")] == "none"


def test_untrusted_text_is_escaped(built):
    _, index, _ = built
    raw = index.read_text()
    assert "<script" not in raw.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    page = _page(index)
    assert EVIL in "".join(page.text) and EVIL_OCR in "".join(page.text)  # shown as text
    assert not page.find("img", src="x")


def test_coverage_has_one_circle_per_point_coloured_by_status(built):
    root, index, _ = built
    page = _page(index)
    for b in find_builds(str(root)):
        dots = page.circles[b.region_id]
        c = b.manifest["counts"]
        assert len(dots) == c["sampled"]
        kept_fill = {d["fill"] for d in dots}
        assert sum(d["fill"] == "#2b8a3e" for d in dots) == c["kept"] and len(kept_fill) == 1 + len(c["failed_by_reason"])
    assert len(page.circles["world"]) == 2


def test_text_statistics_and_qc_lines(built):
    root, index, _ = built
    page = _page(index)
    texts = [r["description"] for r in _kept(root).values()]
    want = text_stats(texts)
    cell = {a["data-stat"]: a for a in page.find("td", data_col="all regions") if "data-stat" in a}
    raw = index.read_text()
    for k, fmt in (("texts", "{:.0f}"), ("mean_tokens", "{:.1f}"), ("type_token_ratio", "{:.3f}"), ("mean_similarity", "{:.3f}")):
        assert k in cell and f'data-stat="{k}" data-col="all regions">{fmt.format(want[k])}<' in raw
    assert "sign text claimed 1, in OCR evidence 1" in raw  # "SHOP n" is quoted and was read
    assert "dropped 1 (on_car 1)" in raw


def test_cli_hook_defaults_to_a_report_folder_in_a_local_build(built, capsys):
    root, _, _ = built
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert main(p.parse_args([str(root / "ke-b"), "--gallery", "2"])) == 0
    index = root / "ke-b" / "report" / "index.html"
    assert capsys.readouterr().out.strip() == str(index) and index.is_file()
    shutil.rmtree(index.parent)
    with pytest.raises(CorebuildError, match="--out"):
        main(p.parse_args(["gs://bucket/build/ke-b"]))


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_renders_in_headless_chromium(built, tmp_path):
    _, index, _ = built
    shot = tmp_path / "shot.png"
    with open(tmp_path / "chromium.log", "wb") as log:  # not a pipe: Chromium's helpers keep pipes open for seconds
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--window-size=1200,3000", f"--screenshot={shot}", index.as_uri()],
            check=True, stdout=log, stderr=log, timeout=60,
        )
    a = np.asarray(Image.open(shot).convert("RGB")).astype(np.int64) // 16
    assert a.shape[:2] == (3000, 1200)
    # images rendered, not only text and maps: ~930 coarse colours here, ~200 with img/ emptied
    assert np.count_nonzero(np.bincount((a[..., 0] * 256 + a[..., 1] * 16 + a[..., 2]).ravel())) > 500


def test_a_gs_build_reports_to_a_local_folder(gcs_emulator, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator["host"])
    root = f"gs://{gcs_emulator['bucket']}/report-test"
    builds.write_fake_build(root, "za-g", -33.92, 18.42, 12, rows_per_shard=5)
    from corebuild.shards.storage import GCSStorage

    real_read = GCSStorage.read
    reads: list[str] = []
    real = GCSStorage.open_read
    monkeypatch.setattr(GCSStorage, "open_read", lambda self, rel: reads.append(rel) or real(self, rel))
    monkeypatch.setattr(GCSStorage, "read", lambda self, rel: (_ for _ in ()).throw(AssertionError(rel)) if rel.endswith(".parquet") else real_read(self, rel))
    page = _page(write_report(root, tmp_path / "r", gallery=3))
    assert len(page.find("div", **{"class": "item"})) == 3 and len(page.circles["za-g"]) == 12
    assert all((tmp_path / "r" / a["src"]).is_file() for a in page.find("img"))
    assert reads and all(r.endswith(".parquet") for r in reads)  # shards by ranged reads, never downloaded whole


def test_the_report_shows_the_builds_evaluations(tmp_path):
    """`corebuild eval` writes into the build's eval/; the report lists Recall@K beside chance
    and fidelity per claim type, names an unreadable file, and says when there is none."""
    root = tmp_path / "b"
    builds.write_fake_build(root, "za-e", -33.92, 18.42, 12)
    assert "None yet" in write_report(root / "za-e", tmp_path / "r0", gallery=0).read_text()
    m = {"candidates": 40, "recall@1": 0.25, "recall@5": 0.5, "recall@10": 0.725, "median_rank": 5.0,
         "chance": {"recall@10": 0.25, "median_rank": 20.5}}
    (root / "za-e" / "eval").mkdir()
    (root / "za-e" / "eval" / "retrieval-s.json").write_text(json.dumps({"aerial": {"splits": {"test": {"full": m, "no_sign_text": None}}}, "map": "none"}))
    (root / "za-e" / "eval" / "fidelity.json").write_text(json.dumps({"describer": "template:template", "overall": {"precision": 0.9},
                                                                       "claims": {"sign_text": {"claims": 10, "precision": 0.4}}}))
    (root / "za-e" / "eval" / "retrieval-broken.json").write_text("{")
    page = write_report(root / "za-e", tmp_path / "r1", gallery=0).read_text()
    section = page.split('<h2 id="eval">')[1]
    assert "<td>0.725 (chance 0.250)</td><td>5.0 (chance 20.5)</td>" in section and "<td>40</td>" in section
    assert "sign_text: 0.4 of 10" in section and "retrieval-broken.json</td><td colspan='8'>unreadable JSON" in section
