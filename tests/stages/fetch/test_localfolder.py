import asyncio
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from corebuild.errors import StageError
from corebuild.stages.fetch.fetcher import FetchConfig
from corebuild.geo import distance_m, equidistant
from corebuild.stages.fetch import STREET_PROVIDERS
from corebuild.stages.fetch import localfolder
from corebuild.images import ImageLimits
from corebuild.stages.fetch.http import HttpConfig
from corebuild.stages.fetch.localfolder import INDEX_NAME, LocalFolder, LocalFolderConfig
from corebuild.record import StreetCapture
from tests.stages.fetch.bombs import jpeg_claiming

LAT0, LON0 = -33.92, 18.42
FWD, INV = equidistant(LAT0, LON0)


def at(east_m: float, north_m: float) -> tuple[float, float]:
    lon, lat = INV.transform(east_m, north_m)
    return float(lat), float(lon)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    deg = int(value)
    minutes = int((value - deg) * 60)
    return (float(deg), float(minutes), (value - deg - minutes / 60) * 3600)


def geotagged_jpeg(path: Path, lat=None, lon=None, heading=None, taken=None, colour=(90, 140, 200), size=(48, 32)) -> bytes:
    """A small JPEG with EXIF GPS (rationals, N/S/E/W refs), GPSImgDirection and DateTimeOriginal."""
    exif = Image.Exif()
    if lat is not None:
        gps = {1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)}
        if heading is not None:
            gps.update({16: "T", 17: float(heading)})
        exif[0x8825] = gps  # GPSInfo IFD
    if taken is not None:
        exif[0x8769] = {0x9003: taken}  # Exif IFD: DateTimeOriginal
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", exif=exif, quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture()
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    geotagged_jpeg(root / "a.jpg", *at(0, 10), heading=90.0, taken="2021:07:04 10:11:12")
    geotagged_jpeg(root / "b.jpg", *at(30, 0), taken="2019:03:01 08:00:00")
    geotagged_jpeg(root / "sub" / "c.jpeg", *at(0, -80), heading=181.5)
    geotagged_jpeg(root / "sub" / "deeper" / "d.JPG", *at(-200, 0), heading=270.0, taken="2018:11:30 23:59:59")
    geotagged_jpeg(root / "e.jpg", *at(400, 400))
    geotagged_jpeg(root / "nogps.jpg", taken="2020:01:01 00:00:00")
    # Header and GPS intact, pixels cut off: indexed, but fails when captured.
    body = geotagged_jpeg(root / "corrupt.jpg", *at(-40, 300), heading=10.0, size=(320, 240))
    (root / "corrupt.jpg").write_bytes(body[: len(body) // 2])
    (root / "junk.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("ignored")
    return root


def run(coro):
    return asyncio.run(coro)


def locate(provider, east_m, north_m):
    return run(provider.locate(*at(east_m, north_m)))


@pytest.fixture()
def count_opens(monkeypatch):
    """How many times PIL opens a file (the indexer reads EXIF through Image.open)."""
    opened: list = []
    real = Image.open

    def counting(fp, *args, **kwargs):
        opened.append(fp)
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return opened


def test_nearest_photo_with_heading_and_date_from_exif(photos):
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))
    loc = locate(lf, 0, 0)
    assert loc.provider == "local" and loc.image_id == loc.dedupe_key == "a.jpg"
    assert loc.distance_m == pytest.approx(10.0, abs=0.05)
    assert loc.heading == pytest.approx(90.0) and loc.capture_date == "2021-07"
    assert (loc.lat, loc.lon) == pytest.approx(at(0, 10), abs=1e-7)
    # a point nearer b.jpg picks it; no GPSImgDirection means no heading
    loc_b = locate(lf, 25, -3)
    assert loc_b.image_id == "b.jpg" and loc_b.heading is None and loc_b.capture_date == "2019-03"
    # files in subfolders, any case of .jpg/.jpeg, by '/'-separated relative path
    assert locate(lf, 0, -70).image_id == "sub/c.jpeg"
    loc_d = locate(lf, -190, 5)
    assert loc_d.image_id == "sub/deeper/d.JPG" and loc_d.heading == pytest.approx(270.0) and loc_d.capture_date == "2018-11"


def test_radius_limits_the_search(photos):
    lf = LocalFolder(LocalFolderConfig(root=str(photos), radius_m=50.0))
    with pytest.raises(StageError) as err:
        locate(lf, 0, -140)  # c.jpeg is 60 m away
    assert err.value.reason == "street.zero_results"
    wide = LocalFolder(LocalFolderConfig(root=str(photos), radius_m=65.0))
    assert locate(wide, 0, -140).distance_m == pytest.approx(60.0, abs=0.05)
    tight = LocalFolder(LocalFolderConfig(root=str(photos), radius_m=9.0))
    with pytest.raises(StageError) as err:
        locate(tight, 0, 0)  # a.jpg is 10 m away
    assert err.value.reason == "street.zero_results"


def test_capture_returns_the_file_as_one_view(photos):
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))
    loc = locate(lf, 0, 0)
    cap = run(lf.capture(loc))
    (view,) = cap.views
    assert cap.provider == "local" and cap.pano_id == "a.jpg" and cap.capture_date == "2021-07"
    assert cap == StreetCapture.of(loc, cap.views)  # every field the index gave
    assert (view.width, view.height, view.heading, view.fov, view.pitch, view.image_format) == (48, 32, 90.0, 90.0, 0.0, "jpeg")
    assert view.image == (photos / "a.jpg").read_bytes()
    assert run(lf.capture(locate(lf, 30, 1))).views[0].heading == 0.0  # unknown heading


def test_the_licence_the_user_states_is_on_every_capture(photos):
    import argparse

    from corebuild.config import BuildConfig
    from corebuild.options import add_flags, from_args

    p = argparse.ArgumentParser()
    add_flags(p, LocalFolderConfig)
    stated = from_args(LocalFolderConfig, p.parse_args(["--local-folder", str(photos), "--local-license", "CC-BY-4.0", "--local-attribution", "© Jane Doe"]))
    cap = run(LocalFolder(stated).capture(locate(LocalFolder(stated), 0, 0)))
    assert (cap.license, cap.copyright) == ("CC-BY-4.0", "© Jane Doe")
    unstated = LocalFolder(from_args(LocalFolderConfig, p.parse_args(["--local-folder", str(photos)])))
    cap = run(unstated.capture(locate(unstated, 0, 0)))
    assert (cap.license, cap.copyright) == ("NOASSERTION", None)  # nothing asserted for the user
    # unstated, the config hash is that of builds from before licences; stated, it is another
    plain = BuildConfig("tiny")
    assert plain.content_hash() == BuildConfig("tiny", fetch=FetchConfig(local=LocalFolderConfig())).content_hash()
    assert plain.content_hash() != BuildConfig("tiny", fetch=FetchConfig(local=LocalFolderConfig(license="CC-BY-4.0"))).content_hash()


def test_corrupt_image_fails_at_capture(photos):
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))
    loc = locate(lf, -40, 295)
    assert loc.image_id == "corrupt.jpg"
    with pytest.raises(StageError) as err:
        run(lf.capture(loc))
    assert err.value.reason == "street.bad_image" and "corrupt.jpg" in str(err.value)


def test_index_counts_skipped_files_and_is_saved(photos):
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))
    idx = run(lf.index())
    s = idx.stats
    assert (s.files, s.geotagged, s.no_gps, s.unreadable, s.read, s.saved) == (8, 6, 1, 1, 8, True)
    doc = json.loads((photos / INDEX_NAME).read_text())
    assert set(doc["files"]) == {"a.jpg", "b.jpg", "sub/c.jpeg", "sub/deeper/d.JPG", "e.jpg", "nogps.jpg", "corrupt.jpg", "junk.jpg"}
    entry = doc["files"]["a.jpg"]
    assert entry["size"] == (photos / "a.jpg").stat().st_size and entry["mtime_ns"] == (photos / "a.jpg").stat().st_mtime_ns
    assert not [p for p in os.listdir(photos) if p.endswith(".tmp")]


def test_second_worker_reuses_the_index(photos, count_opens):
    run(LocalFolder(LocalFolderConfig(root=str(photos))).index())
    assert len(count_opens) == 8
    count_opens.clear()
    # Another worker (or run): nothing changed, nothing is opened.
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))
    assert locate(lf, 0, 0).image_id == "a.jpg"
    assert count_opens == [] and lf._index.stats.read == 0 and lf._index.stats.saved is False
    # One file moves, one is deleted, one is added: only the new and changed ones are read.
    geotagged_jpeg(photos / "b.jpg", *at(300, -300), size=(40, 40))
    (photos / "e.jpg").unlink()
    geotagged_jpeg(photos / "sub" / "f.jpg", *at(5, 0), heading=45.0)
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))
    loc = locate(lf, 4, 0)
    assert loc.image_id == "sub/f.jpg" and loc.heading == pytest.approx(45.0)
    assert sorted(Path(p).name for p in count_opens) == ["b.jpg", "f.jpg"]
    assert locate(lf, 298, -298).image_id == "b.jpg"
    assert "e.jpg" not in json.loads((photos / INDEX_NAME).read_text())["files"]


def test_concurrent_first_locates_index_once(photos, count_opens):
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))

    async def many():
        return await asyncio.gather(*(lf.locate(*at(0, 0)) for _ in range(12)))

    locs = run(many())
    assert {loc.image_id for loc in locs} == {"a.jpg"} and len(count_opens) == 8


def test_read_only_folder_keeps_the_index_in_memory(photos, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(localfolder.tempfile, "mkstemp", refuse)
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))
    assert locate(lf, 0, 0).image_id == "a.jpg"
    assert lf._index.stats.saved is False and not (photos / INDEX_NAME).exists()


def test_stale_or_foreign_index_is_rebuilt(photos, count_opens):
    (photos / INDEX_NAME).write_text('{"version": 999, "files": {"a.jpg": {"size": 1}}}')
    lf = LocalFolder(LocalFolderConfig(root=str(photos)))
    assert locate(lf, 0, 0).image_id == "a.jpg" and len(count_opens) == 8
    (photos / INDEX_NAME).write_text("{ truncated")
    assert locate(LocalFolder(LocalFolderConfig(root=str(photos))), 0, 0).image_id == "a.jpg"


def test_missing_or_empty_folder_says_which(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(StageError) as err:
        locate(LocalFolder(LocalFolderConfig(root=str(missing))), 0, 0)
    assert err.value.reason == "street.no_local_images" and str(missing) in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    geotagged_jpeg(empty / "nogps.jpg")
    with pytest.raises(StageError) as err:
        locate(LocalFolder(LocalFolderConfig(root=str(empty))), 0, 0)
    assert err.value.reason == "street.no_local_images" and str(empty) in str(err.value) and "1 without GPS" in str(err.value)
    with pytest.raises(StageError) as err:
        locate(LocalFolder(LocalFolderConfig()), 0, 0)
    assert err.value.reason == "street.no_local_images" and "fetch.local.root" in str(err.value)


def test_gps_refs_and_degenerate_positions(tmp_path):
    root = tmp_path / "world"
    geotagged_jpeg(root / "ne.jpg", 48.8584, 2.2945)
    geotagged_jpeg(root / "sw.jpg", -22.9519, -43.2105)
    geotagged_jpeg(root / "null_island.jpg", 0.0, 0.0)  # no GPS fix yet
    lf = LocalFolder(LocalFolderConfig(root=str(root), radius_m=5.0))
    assert run(lf.locate(48.8584, 2.2945)).distance_m < 0.05
    sw = run(lf.locate(-22.9519, -43.2105))
    assert sw.image_id == "sw.jpg" and distance_m(sw.lat, sw.lon, -22.9519, -43.2105) < 0.05
    assert lf._index.stats.no_gps == 1


def test_registered_as_local(photos):
    provider = STREET_PROVIDERS.load("local")(FetchConfig(street_provider="local", local=LocalFolderConfig(root=str(photos))), None)
    assert isinstance(provider, LocalFolder) and provider.name == "local"
    assert locate(provider, 0, 0).image_id == "a.jpg"


# ----- decode limits ---------------------------------------------------------------------------


@pytest.fixture()
def hostile(tmp_path) -> Path:
    """Geotagged files 100 m apart (east of the origin) that must never be decoded."""
    root = tmp_path / "hostile"
    for i, (name, claim) in enumerate([("pixels.jpg", (9000, 8000)), ("warns.jpg", (12000, 8000)), ("refused.jpg", (20000, 20000))]):
        body = geotagged_jpeg(root / name, *at(100 * i, 0), heading=10.0 * i)
        (root / name).write_bytes(jpeg_claiming(body, *claim))  # header claims 72 / 96 / 400 MP
    geotagged_jpeg(root / "huge.jpg", *at(300, 0))
    os.truncate(root / "huge.jpg", 100 * 1024 * 1024)  # sparse: 100 MiB on paper, over the 64 MiB default
    geotagged_jpeg(root / "ok.jpg", *at(400, 0), size=(64, 48))
    return root


def test_hostile_photos_are_indexed_from_their_headers_and_fail_at_capture(hostile, recwarn):
    lf = LocalFolder(LocalFolderConfig(root=str(hostile)), HttpConfig().image_limits)
    idx = run(lf.index())
    s = idx.stats
    # EXIF is read from the headers only (a 100 MiB file, 72-96 MP claims); what Pillow refuses to
    # open at all (400 MP, twice its MAX_IMAGE_PIXELS) has no readable GPS: counted, skipped.
    assert (s.files, s.geotagged, s.unreadable, s.too_large, s.no_gps) == (5, 4, 0, 1, 0)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert json.loads((hostile / INDEX_NAME).read_text())["files"]["refused.jpg"]["too_large"] is True

    def reason(east_m):
        with pytest.raises(StageError) as err:
            run(lf.capture(locate(lf, east_m, 1)))
        assert "\n" not in str(err.value)
        return err.value.reason, str(err.value)

    why = reason(0)
    assert why[0] == "street.image_too_large" and "local image pixels.jpg is 9000x8000" in why[1] and "fetch.http.max_image_pixels" in why[1]
    why = reason(100)
    assert why[0] == "street.image_too_large" and "warns.jpg" in why[1] and "decompression-bomb guard" in why[1]
    why = reason(300)
    assert why[0] == "street.image_too_large" and "huge.jpg is 104,857,600 bytes" in why[1] and "fetch.http.max_image_bytes" in why[1]
    with pytest.raises(StageError) as err:
        locate(lf, 200, 1)  # refused.jpg is not in the index
    assert err.value.reason == "street.zero_results"
    view = run(lf.capture(locate(lf, 400, 1))).views[0]
    assert (view.width, view.height) == (64, 48)  # the normal photo beside them still works


def test_a_folder_of_only_refused_files_says_so(tmp_path):
    body = geotagged_jpeg(tmp_path / "r" / "big.jpg", *at(0, 0))
    (tmp_path / "r" / "big.jpg").write_bytes(jpeg_claiming(body, 30000, 30000))
    with pytest.raises(StageError) as err:
        locate(LocalFolder(LocalFolderConfig(root=str(tmp_path / "r"))), 0, 0)
    assert err.value.reason == "street.no_local_images" and "1 too large" in str(err.value)


def test_local_limits_are_configurable_and_come_from_the_fetch_config(photos):
    loc = locate(LocalFolder(LocalFolderConfig(root=str(photos))), 0, 0)  # a.jpg, 48x32
    assert run(LocalFolder(LocalFolderConfig(root=str(photos)), ImageLimits(max_pixels=48 * 32)).capture(loc)).views[0].width == 48
    for limits, words in ((ImageLimits(max_pixels=48 * 32 - 1), "48x32"), (ImageLimits(max_bytes=100), "bytes")):
        with pytest.raises(StageError) as err:
            run(LocalFolder(LocalFolderConfig(root=str(photos)), limits).capture(loc))
        assert err.value.reason == "street.image_too_large" and words in str(err.value)
    cfg = FetchConfig(street_provider="local", local=LocalFolderConfig(root=str(photos)), http=HttpConfig(max_image_pixels=1234, max_image_bytes=5678))
    assert STREET_PROVIDERS.load("local")(cfg, None).limits == ImageLimits(1234, 5678)
