"""`corebuild inspect`: a static HTML report of a build (one region, or an output root holding
several): a seeded gallery (street views with OCR boxes, aerial crop with the sampled point and
the camera marked, description, OCR, QC), coverage maps, failure reasons, text statistics and
build provenance.

The folder is self-contained (no JS, no outside CSS or fonts; it works from file://). Images are
JPEG files under img/, not base64 as in audit.html, so a gallery of hundreds stays light. Every
text from the data is HTML-escaped: descriptions and OCR text are untrusted.

Memory: one pass over light columns picks the gallery, then images are read only for the picked
rows, one shard (and only its row groups holding picks) at a time.
"""

from __future__ import annotations

import argparse
import json
import html
import io
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import mercantile
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from corebuild.dataset.reader import BuildRef, find_builds
from corebuild.shards.storage import open_parquet
from corebuild.errors import CorebuildError
from corebuild.geo import equidistant
from corebuild.stages.qc import claimed_signs, grounded
from corebuild.dataset.stats import CVG_TEXT, text_stats
from corebuild.shards.schema import row_to_record
from corebuild.shards.storage import LocalStorage, open_storage

LIGHT = ["sample_id", "status", "failure_reason", "lat", "lon", "description"]
GALLERY = [
    "sample_id", "region_id", "lat", "lon", "street_provider", "pano_id", "street_lat", "street_lon", "capture_date",
    "street_distance_m", "street_views", "aerial_provider", "aerial_image", "aerial_zoom", "aerial_west", "aerial_south",
    "aerial_east", "aerial_north", "aerial_gsd_m", "ocr", "ocr_backend", "description", "description_parts",
    "describer_backend", "describer_model", "prompt_id",
]
VIEW_PX, AERIAL_PX = 320, 320  # longest side written: originals are 640 px and more
SIM_SAMPLE = 2000  # texts for the pairwise similarity (as stats.text_stats)
KEPT = "#2b8a3e"
PALETTE = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#1f77b4", "#000000"]
OCR_RGB, DROPPED_RGB = (255, 221, 0), (255, 0, 255)
POINT_RGB, CAMERA_RGB = (255, 0, 0), (0, 120, 255)
CSS = """body{font-family:sans-serif;margin:1em 2em} td,th{vertical-align:top;padding:4px 6px;border-bottom:1px solid #ccc;text-align:left}
th{background:#f4f4f4} .num{text-align:right} .scroll{overflow-x:auto} .dropped{color:#999;text-decoration:line-through}
.item{border:1px solid #ccc;margin:10px 0;padding:8px;display:flex;gap:10px;flex-wrap:wrap} .views{display:flex;gap:4px;flex-wrap:wrap}
figure{margin:0} figcaption{font-size:small;color:#555} .meta{max-width:520px;font-size:14px} .warn{color:#b00} .ok{color:#2b8a3e}
.sw{display:inline-block;width:10px;height:10px;border-radius:5px;margin:0 4px 0 10px} .maps{display:flex;flex-wrap:wrap;gap:12px}
svg{border:1px solid #ccc;background:#fff} small{color:#666}"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


@dataclass
class _Region:
    build: BuildRef
    lat: np.ndarray
    lon: np.ndarray
    reason: list[Optional[str]]  # None for kept rows
    stats: dict[str, float]
    texts: list[str]  # a seeded uniform sample (random order) for the pooled similarity


def _open(b: BuildRef, name: str) -> pq.ParquetFile:
    return open_parquet(b.storage, name)  # only the column chunks / row groups asked for are read


def _scan(b: BuildRef, seed: int) -> tuple[_Region, list[tuple[str, str, int]]]:
    """Light columns of every shard: points, reasons, texts, and the kept rows' locations."""
    lat: list[float] = []
    lon: list[float] = []
    reason: list[Optional[str]] = []
    texts: list[str] = []
    kept: list[tuple[str, str, int]] = []  # (sample_id, shard, row in shard)
    for name in b.shard_names():
        # Single-threaded: threaded reads can abort the process at exit (see corebuild.dataset.reader).
        t = _open(b, name).read(columns=LIGHT, use_threads=False).to_pydict()
        for i, (sid, st, why, la, lo, d) in enumerate(zip(*(t[c] for c in LIGHT))):
            lat.append(la)
            lon.append(lo)
            reason.append(None if st == "kept" else (why or st or "unknown"))
            if st == "kept":
                kept.append((sid, name, i))
                if d:
                    texts.append(d)
    stats = text_stats(texts, seed=seed)
    order = np.random.default_rng(seed).permutation(len(texts))[:SIM_SAMPLE]
    return _Region(b, np.array(lat, float), np.array(lon, float), reason, stats, [texts[i] for i in order]), kept


def _pooled_stats(regions: list[_Region], seed: int) -> dict[str, float]:
    """All regions' text measures without holding all texts: the means are per-text means, so
    they combine weighted by counts; the similarity runs on a uniform sample of the union."""
    if len(regions) == 1:
        return regions[0].stats
    n = np.array([r.stats["texts"] for r in regions], dtype=np.int64)
    if n.sum() == 0:
        return text_stats([])
    take = np.random.default_rng(seed).multivariate_hypergeometric(n, min(int(n.sum()), SIM_SAMPLE))
    pool = [t for r, k in zip(regions, take) for t in r.texts[:k]]

    def mean(key: str) -> float:
        return float(sum(r.stats["texts"] * r.stats[key] for r in regions if r.stats["texts"]) / n.sum())

    return {"texts": int(n.sum()), "mean_tokens": mean("mean_tokens"), "type_token_ratio": mean("type_token_ratio"), "mean_similarity": text_stats(pool)["mean_similarity"]}


def _read_picked(b: BuildRef, name: str, rows: list[int]) -> list[dict[str, Any]]:
    """Only the row groups that hold picked rows, only the gallery's columns."""
    pf = _open(b, name)
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
    starts = np.cumsum([0] + sizes)
    group = {r: int(np.searchsorted(starts, r, side="right") - 1) for r in rows}
    groups = sorted(set(group.values()))
    before = {g: sum(sizes[h] for h in groups if h < g) for g in groups}  # where each group starts in the read table
    cols = [c for c in GALLERY if c in pf.schema_arrow.names]  # older shards may lack newer columns
    t = pf.read_row_groups(groups, columns=cols, use_threads=False)
    idx = [before[group[r]] + r - int(starts[group[r]]) for r in rows]
    return t.take(pa.array(idx, pa.int64())).to_pylist()


def _shrink(im: Image.Image, px: int) -> tuple[Image.Image, float]:
    s = min(1.0, px / max(im.size))
    if s < 1.0:
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    return im, s


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 (no scalable default font)
        return ImageFont.load_default()


def _save(im: Image.Image, path: Path) -> str:
    im.save(path, "JPEG", quality=88)
    return f"img/{path.name}"


def _draw_view(view: dict[str, Any], ocr: list[tuple[int, dict[str, Any]]], path: Path) -> str:
    im, s = _shrink(Image.open(io.BytesIO(view["image"])).convert("RGB"), VIEW_PX)
    draw, font = ImageDraw.Draw(im), _font(max(9, im.height // 24))
    for n, o in ocr:
        box = o.get("box") or []
        if len(box) < 6:
            continue
        pts = [(x * s, y * s) for x, y in zip(box[0::2], box[1::2])]
        colour = DROPPED_RGB if o.get("dropped") else OCR_RGB
        draw.polygon(pts, outline=colour, width=2)
        x0, y0 = min(p[0] for p in pts), min(p[1] for p in pts)
        label = f"{n} {o['text'][:24]}"
        try:
            l, t, r, b = draw.textbbox((0, 0), label, font=font)
        except (UnicodeEncodeError, ValueError):  # a bitmap font cannot draw every script
            label = str(n)
            l, t, r, b = draw.textbbox((0, 0), label, font=font)
        y = y0 - (b - t) - 3 if y0 - (b - t) - 3 >= 0 else max(p[1] for p in pts) + 3  # above the box, else below
        draw.rectangle([x0, y, x0 + r - l + 2, y + b - t + 2], fill=(0, 0, 0))
        draw.text((x0 + 1 - l, y + 1 - t), label, fill=colour, font=font)
    return _save(im, path)


def crop_pixel(row: dict[str, Any], lat: float, lon: float, width: int, height: int) -> tuple[float, float]:
    """(lat, lon) -> pixel of a north-up Web Mercator crop with the row's aerial bounds."""
    x0, y0 = mercantile.xy(row["aerial_west"], row["aerial_north"])
    x1, y1 = mercantile.xy(row["aerial_east"], row["aerial_south"])
    mx, my = mercantile.xy(lon, lat)
    return (mx - x0) / (x1 - x0) * width, (y0 - my) / (y0 - y1) * height


def _draw_aerial(row: dict[str, Any], path: Path) -> tuple[str, bool]:
    """The crop with the camera (square) and the sampled point (disc); whether the point is in it
    (the crop is centred on the camera, so a point far from it can fall outside)."""
    im, _ = _shrink(Image.open(io.BytesIO(row["aerial_image"])).convert("RGB"), AERIAL_PX)
    draw, r = ImageDraw.Draw(im), max(3, im.width // 40)
    if row.get("street_lat") is not None and row.get("street_lon") is not None:
        cx, cy = crop_pixel(row, row["street_lat"], row["street_lon"], im.width, im.height)
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=CAMERA_RGB, outline=(255, 255, 255))
    px, py = crop_pixel(row, row["lat"], row["lon"], im.width, im.height)  # drawn last: on top when they coincide
    inside = 0 <= px < im.width and 0 <= py < im.height
    if inside:
        draw.ellipse([px - r, py - r, px + r, py + r], fill=POINT_RGB, outline=(255, 255, 255))
    else:  # a ring on the edge, in the point's direction
        px, py = min(max(px, r + 1), im.width - r - 2), min(max(py, r + 1), im.height - r - 2)
        draw.ellipse([px - r, py - r, px + r, py + r], outline=POINT_RGB, width=2)
    return _save(im, path), inside


def qc_notes(row: dict[str, Any]) -> list[tuple[bool, str]]:
    """Kept rows carry no stored QC flags (a failed check is a failure row), so the report
    re-runs the grounding check on what the row holds and lists dropped OCR: (ok, text)."""
    notes: list[tuple[bool, str]] = []
    rec = row_to_record(row)  # the columns read: the gallery's
    ocr = rec.ocr or ()
    if not (rec.description and rec.description.text):
        notes.append((False, "no description"))
    try:
        claims = claimed_signs(rec)
    except ValueError:
        claims = []
        notes.append((False, "description_parts is not valid JSON"))
    evidence = [o.text for o in ocr if not o.dropped]
    bad = [c for c in claims if not grounded(c, evidence)]
    notes.append((not bad, f"sign text claimed {len(claims)}, in OCR evidence {len(claims) - len(bad)}" + (f"; not grounded: {bad[:5]}" if bad else "")))
    dropped = Counter(o.dropped for o in ocr if o.dropped)
    notes.append((True, f"OCR readings {len(ocr)}, dropped {sum(dropped.values())}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(dropped.items()))})" if dropped else "")))
    return notes


def _gallery_item(k: int, row: dict[str, Any], img: Path) -> str:
    stem = f"{k:04d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', row['sample_id'])[:80]}"
    ocr = list(enumerate(row.get("ocr") or [], 1))
    views = []
    for j, v in enumerate(row.get("street_views") or []):
        mine = [(n, o) for n, o in ocr if o.get("heading") is not None and abs(o["heading"] - v["heading"]) < 1e-3]
        src = _draw_view(v, mine, img / f"{stem}-v{j}.jpg")
        views.append(f'<figure><img class="view" data-heading="{v["heading"]:g}" src="{src}" width="160"><figcaption>{v["heading"]:g}°</figcaption></figure>')
    aerial = ""
    if row.get("aerial_image") and row.get("aerial_west") is not None:
        src, inside = _draw_aerial(row, img / f"{stem}-aerial.jpg")
        zoom = f"z{row['aerial_zoom']}, " if row.get("aerial_zoom") is not None else ""
        gsd = f"{row['aerial_gsd_m']:.2f} m/px" if row.get("aerial_gsd_m") is not None else ""
        aerial = (
            f'<figure><img class="aerial" src="{src}" width="200"><figcaption><span style="color:#f00">●</span> point '
            f'<span style="color:#0078ff">■</span> camera{"" if inside else " <span class=warn>(point outside the crop)</span>"}<br>'
            f'{_e(row.get("aerial_provider"))} {zoom}{gsd}</figcaption></figure>'
        )
    ocr_html = "<br>".join(
        f"<span class='{'dropped' if o.get('dropped') else ''}'>{n}. {_e(o['text'])} ({o['heading']:g}°, {o['confidence']:.2f}"
        + (f", dropped: {_e(o['dropped'])}" if o.get("dropped") else "")
        + ")</span>"
        for n, o in ocr
    )
    qc = "<br>".join(f"<span class='{'ok' if ok else 'warn'}'>{_e(t)}</span>" for ok, t in qc_notes(row))
    dist = f"{row['street_distance_m']:.1f} m" if row.get("street_distance_m") is not None else "?"
    return (
        f'<div class="item" id="item-{_e(row["sample_id"])}" data-sample="{_e(row["sample_id"])}"><div class="views">{"".join(views)}</div>{aerial}'
        f'<div class="meta"><b>{_e(row["sample_id"])}</b> ({_e(row.get("region_id"))})<br>point {row["lat"]:.6f}, {row["lon"]:.6f}; '
        f"camera {dist} away ({_e(row.get('street_provider'))} {_e(row.get('pano_id'))}), captured {_e(row.get('capture_date') or '?')}<br>"
        f'<p class="description">{_e(row.get("description"))}</p><small>{_e(row.get("describer_backend"))} / {_e(row.get("describer_model"))} / '
        f"{_e(row.get('prompt_id'))}</small><p><b>OCR</b> <small>{_e(row.get('ocr_backend'))}</small><br>{ocr_html or '<small>none</small>'}</p>"
        f'<p class="qc"><b>QC</b><br>{qc}</p></div></div>'
    )


def _colours(regions: list[_Region]) -> dict[str, str]:
    counts = Counter(r for g in regions for r in g.reason if r)
    return {why: PALETTE[i % len(PALETTE)] for i, (why, _) in enumerate(counts.most_common())}


def _region_svg(g: _Region, colours: dict[str, str], size: int = 300, pad: int = 10) -> str:
    """Points in an azimuthal equidistant projection about their mean: equal aspect, metres."""
    rid = _e(g.build.region_id)
    if not len(g.lat):
        return f'<svg class="coverage" data-region="{rid}" width="{size}" height="{size}"></svg>'
    fwd, _ = equidistant(float(g.lat.mean()), float(g.lon.mean()))
    x, y = (np.asarray(a) for a in fwd.transform(g.lon, g.lat))
    span = max(float(np.ptp(x)), float(np.ptp(y)), 1.0)
    s = (size - 2 * pad) / span
    px = pad + (x - x.min()) * s + (span - np.ptp(x)) * s / 2
    py = pad + (y.max() - y) * s + (span - np.ptp(y)) * s / 2
    order = sorted(range(len(px)), key=lambda i: g.reason[i] is not None)  # failed drawn on top
    dots = "".join(f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="2.2" fill="{colours.get(g.reason[i], KEPT) if g.reason[i] else KEPT}"/>' for i in order)
    unit = 10 ** math.floor(math.log10(span / 4))
    bar = max(m * unit for m in (1, 2, 5) if m * unit <= span / 4)  # a round scale bar, at most a quarter wide
    label = f"{bar / 1000:g} km" if bar >= 1000 else f"{bar:g} m"
    scale = f'<line x1="{pad}" y1="{size - 4}" x2="{pad + bar * s:.1f}" y2="{size - 4}" stroke="#000" stroke-width="2"/><text x="{pad + bar * s + 4:.1f}" y="{size - 1}" font-size="10">{label}</text>'
    return f'<svg class="coverage" data-region="{rid}" width="{size}" height="{size}" viewBox="0 0 {size} {size}">{dots}{scale}</svg>'


def _world(regions: list[_Region], img: Path) -> str:
    """Equirectangular overview, one dot per region sized by its points, over the land mask."""
    from corebuild.regions.landmask import is_land

    lat, lon = np.meshgrid(np.linspace(89.75, -89.75, 360), np.linspace(-179.75, 179.75, 720), indexing="ij")
    rgb = np.where(is_land(lat, lon)[..., None], np.uint8([222, 222, 214]), np.uint8([245, 250, 255])).astype(np.uint8)
    Image.fromarray(rgb).save(img / "world.png")
    bg = '<image href="img/world.png" x="0" y="0" width="720" height="360"/>'
    big = max([len(g.lat) for g in regions] + [1])
    dots = "".join(
        f'<circle cx="{(float(g.lon.mean()) + 180) * 2:.1f}" cy="{(90 - float(g.lat.mean())) * 2:.1f}" r="{3 + 9 * math.sqrt(len(g.lat) / big):.1f}" '
        f'fill="{KEPT}" fill-opacity="0.7" stroke="#000"><title>{_e(g.build.region_id)}: {len(g.lat)} points</title></circle>'
        for g in regions
        if len(g.lat)
    )
    return f'<svg class="world" width="720" height="360" viewBox="0 0 720 360">{bg}{dots}</svg>'


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "–"


def _quota_table(ms: list[dict[str, Any]], rids: list[str]) -> str:
    """Quota, kept, sampled, rounds, yield and shortfall per region, from the manifests' `quota`
    block. Builds from before top-up rounds have none: their kept and sampled come from `counts`
    (the yield is then honest too); what they aimed for and how many rounds they ran are not known."""
    tot = {"quota": 0, "kept": 0, "sampled": 0}
    short, known = 0, True

    def td(rid: str, col: str, v: Any, num: bool = True) -> str:
        cls = ' class="num"' if num else ""
        return f'<td{cls} data-region="{_e(rid)}" data-col="quota.{col}">{_e("–" if v is None else v)}</td>'

    body = ""
    for rid, m in zip(rids, ms):
        q, c = m.get("quota"), m.get("counts", {})
        kept, sampled = (int(q.get("kept", 0)), int(q.get("sampled", 0))) if q else (int(c.get("kept", 0)), int(c.get("sampled", 0)))
        tot["kept"] += kept
        tot["sampled"] += sampled
        if q:
            tot["quota"] += int(q.get("quota", 0))
            short += bool(q.get("shortfall"))
        else:
            known = False
        get, ey = (q or {}).get, (q or {}).get("expected_yield")
        row = [("quota", get("quota")), ("target", get("target")), ("of", get("of")), ("kept", kept), ("sampled", sampled), ("rounds", get("rounds"))]
        row += [("yield", _pct(kept, sampled)), ("expected_yield", None if ey is None else f"{100 * ey:.0f}%")]
        row += [("missing", get("missing")), ("trimmed", get("trimmed"))]
        cells = "".join(td(rid, k, v) for k, v in row)
        cells += td(rid, "shortfall", (q.get("shortfall") or "none") if q else None, num=False)
        body += f"<tr><td>{_e(rid)}</td>{cells}</tr>"
    total = [("quota", tot["quota"] if known else None), ("target", None), ("of", None), ("kept", tot["kept"]), ("sampled", tot["sampled"])]
    total += [("rounds", None), ("yield", _pct(tot["kept"], tot["sampled"])), ("expected_yield", None), ("missing", None), ("trimmed", None)]
    totals = "".join(td("*total*", k, v) for k, v in total) + td("*total*", "shortfall", f"{short} region(s)" if short else ("none" if known else None), num=False)
    body += f"<tr><th>total</th>{totals}</tr>"
    head = "".join(f"<th>{h}</th>" for h in ("region", "quota", "target", "counts", "kept", "sampled", "rounds", "yield", "expected yield", "missing", "trimmed", "shortfall"))
    return (
        '<h2 id="quota">Quota</h2><p>From manifest.json: the quota (target: after --limit) counts kept samples, or sampled points '
        "under --quota-of sampled; yield is kept / sampled; trimmed points were processed past the quota and dropped. "
        "– : not recorded (a build from before top-up rounds).</p>"
        f'<div class="scroll"><table class="quota"><tr>{head}</tr>{body}</table></div>'
    )


def _tables(regions: list[_Region], total_stats: dict[str, float]) -> str:
    ms = [g.build.manifest for g in regions]
    counts = [m.get("counts", {}) for m in ms]
    reasons = sorted({k for c in counts for k in c.get("failed_by_reason", {})})
    tot = {k: sum(int(c.get(k, 0)) for c in counts) for k in ("sampled", "kept", "failed")}
    tot_reason = {k: sum(int(c.get("failed_by_reason", {}).get(k, 0)) for c in counts) for k in reasons}

    def cells(rid: str, c: dict[str, Any], by_reason: dict[str, int]) -> str:
        n = int(c.get("sampled", 0))
        out = "".join(f'<td class="num" data-region="{_e(rid)}" data-col="{k}">{int(c.get(k, 0))}</td>' for k in ("sampled", "kept", "failed"))
        out += f'<td class="num">{_pct(int(c.get("kept", 0)), n)}</td>'
        return out + "".join(f'<td class="num" data-region="{_e(rid)}" data-col="{_e(k)}">{by_reason.get(k, 0)}<br><small>{_pct(by_reason.get(k, 0), n)}</small></td>' for k in reasons)

    head = "<tr><th>region</th><th>sampled</th><th>kept</th><th>failed</th><th>kept %</th>" + "".join(f"<th>{_e(k)}</th>" for k in reasons) + "</tr>"
    body = "".join(f"<tr><td>{_e(g.build.region_id)}</td>{cells(g.build.region_id, c, c.get('failed_by_reason', {}))}</tr>" for g, c in zip(regions, counts))
    body += f"<tr><th>total</th>{cells('*total*', tot, tot_reason)}</tr>"
    failures = f'<h2 id="failures">Failure reasons</h2><p>From manifest.json; percentages of sampled points.</p><div class="scroll"><table class="failures">{head}{body}</table></div>'

    info = "".join(
        f"<tr><td>{_e(g.build.region_id)}</td><td>{_e((m.get('region') or {}).get('name'))}</td><td>{_e((m.get('region') or {}).get('country'))}</td>"
        f"<td>{_e((m.get('region') or {}).get('continent'))}</td><td class='num'>{len(m.get('shards', []))}</td>"
        f"<td class='num'>{sum(s.get('bytes', 0) for s in m.get('shards', [])) / 1e6:.1f}</td><td class='num'>{len(m.get('attempts') or []) or '–'}</td>"
        f"<td class='num'>{_e((m.get('timings') or {}).get('total_s', '–'))}</td>"
        f"<td class='{'ok' if m.get('consistent') else 'warn'}'>{_e(m.get('consistent'))}</td><td class='num'>{_e(m.get('counts', {}).get('duplicate_sample_ids', '–'))}</td></tr>"
        for g, m in zip(regions, ms)
    )
    summary = (
        f'<h2 id="summary">Regions</h2><table><tr><th>region</th><th>name</th><th>country</th><th>continent</th><th>shards</th><th>MB</th>'
        f"<th>attempts</th><th>build s</th><th>consistent</th><th>duplicate ids</th></tr>{info}</table>"
    )

    cols = [("all regions", total_stats), ("CVG-Text", {"texts": None, **CVG_TEXT})] + ([(g.build.region_id, g.stats) for g in regions] if len(regions) > 1 else [])
    fmt = {"texts": "{:.0f}", "mean_tokens": "{:.1f}", "type_token_ratio": "{:.3f}", "mean_similarity": "{:.3f}"}
    rows = "".join(
        f"<tr><td>{k}</td>" + "".join(f'<td class="num" data-stat="{k}" data-col="{_e(name)}">{"–" if s.get(k) is None or s[k] != s[k] else fmt[k].format(s[k])}</td>' for name, s in cols) + "</tr>"
        for k in fmt
    )
    stats = (
        f'<h2 id="text">Text statistics</h2><p>Kept descriptions (corebuild.dataset.stats.text_stats); CVG-Text reports mean 126 tokens, TTR 0.76, mean similarity 0.17.</p>'
        f'<div class="scroll"><table class="stats"><tr><th>measure</th>{"".join(f"<th>{_e(n)}</th>" for n, _ in cols)}</tr>{rows}</table></div>'
    )

    def model(m: dict[str, Any], key: str) -> str:
        return _e((m.get("models") or {}).get(key, "–"))

    prov = "".join(
        f"<tr><td>{_e(g.build.region_id)}</td><td>{_e(m.get('build_id'))}</td><td>{_e(m.get('started_utc', '–'))}</td><td>{_e(m.get('code_version', '–'))}</td>"
        f"<td>{_e(m.get('config_hash', '–'))}</td><td>{model(m, 'describer')}</td><td>{model(m, 'ocr')}</td><td>{model(m, 'segmentation')}</td>"
        f"<td>{model(m, 'mask_labels')}</td><td>{_e(((m.get('models') or {}).get('prompt') or {}).get('id', '–'))} "
        f"<small>{_e(((m.get('models') or {}).get('prompt') or {}).get('hash', ''))}</small></td></tr>"
        for g, m in zip(regions, ms)
    )
    provenance = (
        '<h2 id="provenance">Provenance</h2><div class="scroll"><table><tr><th>region</th><th>build id</th><th>started (UTC)</th><th>code version</th>'
        f"<th>config hash</th><th>describer</th><th>OCR</th><th>segmentation</th><th>mask labels</th><th>prompt</th></tr>{prov}</table></div>"
    )
    return summary + _quota_table(ms, [g.build.region_id for g in regions]) + failures + stats + provenance


def _evaluations(builds: list[BuildRef]) -> str:
    """`corebuild eval` results found in each build's eval/: retrieval Recall@K beside chance, and
    fidelity precision per claim type. A file that does not parse is named, not fatal."""
    rows, fid = [], []
    for b in builds:
        for name in sorted(n for n in b.storage.list("eval/") if n.endswith(".json")):
            base = name.rsplit("/", 1)[-1]
            try:
                doc = json.loads(b.storage.read(name) or b"")
            except ValueError:
                rows.append(f"<tr><td>{_e(b.region_id)}</td><td>{_e(base)}</td><td colspan='8'>unreadable JSON</td></tr>")
                continue
            if base.startswith("retrieval-"):
                for modality in ("aerial", "map"):
                    res = doc.get(modality)
                    for split, variants in (res.get("splits", {}) if isinstance(res, dict) else {}).items():
                        for variant, m in (variants or {}).items():
                            if not isinstance(m, dict):
                                continue
                            c = m.get("chance", {})
                            rows.append(
                                f"<tr><td>{_e(b.region_id)}</td><td>{_e(base)}</td><td>{_e(modality)}</td><td>{_e(split)}</td><td>{_e(variant)}</td>"
                                f"<td>{m.get('candidates')}</td><td>{m.get('recall@1', 0):.3f}</td><td>{m.get('recall@5', 0):.3f}</td>"
                                f"<td>{m.get('recall@10', 0):.3f} (chance {c.get('recall@10', 0):.3f})</td>"
                                f"<td>{m.get('median_rank')} (chance {c.get('median_rank')})</td></tr>"
                            )
            elif base == "fidelity.json":
                claims = doc.get("claims", {})
                cells = "".join(f"<td>{_e(k)}: {v.get('precision')} of {v.get('claims')}</td>" for k, v in claims.items() if isinstance(v, dict))
                fid.append(f"<tr><td>{_e(b.region_id)}</td><td>{_e(doc.get('describer'))}</td><td>{(doc.get('overall') or {}).get('precision')}</td>{cells}</tr>")
    out = '<h2 id="eval">Evaluation</h2>'
    if not rows and not fid:
        return out + "<p>None yet: <code>corebuild eval retrieval BUILD --split FILE</code>, <code>corebuild eval fidelity BUILD</code>.</p>"
    if rows:
        out += ("<p>Text to image retrieval baseline (<code>corebuild eval retrieval</code>); each split is its own gallery.</p><div class='scroll'><table>"
                "<tr><th>region</th><th>report</th><th>gallery</th><th>split</th><th>queries</th><th>candidates</th><th>R@1</th><th>R@5</th>"
                "<th>R@10</th><th>median rank</th></tr>" + "".join(rows) + "</table></div>")
    if fid:
        out += ("<p>Fidelity to the synthetic world (<code>corebuild eval fidelity</code>): precision per claim type.</p><div class='scroll'><table>"
                "<tr><th>region</th><th>describer</th><th>overall</th><th colspan='5'>per claim type</th></tr>" + "".join(fid) + "</table></div>")
    return out


def write_report(build_url_or_root: str | Path, out_dir: str | Path, gallery: int = 48, seed: int = 0) -> Path:
    """Write `<out_dir>/index.html` (+ img/) for a region build or an output root; returns its path."""
    url = str(build_url_or_root)
    builds = find_builds(url)
    out, img = Path(out_dir), Path(out_dir) / "img"
    img.mkdir(parents=True, exist_ok=True)
    for stale in img.glob("*.jpg"):  # a previous report's gallery
        stale.unlink()

    regions, candidates = [], []
    for b in builds:
        g, kept = _scan(b, seed)
        regions.append(g)
        candidates += [(sid, len(regions) - 1, name, i) for sid, name, i in kept]
    candidates.sort()
    k = min(max(gallery, 0), len(candidates))
    picks = sorted(np.random.default_rng(seed).choice(len(candidates), size=k, replace=False).tolist()) if k else []
    by_shard: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)  # (region, shard) -> (gallery slot, row)
    for slot, p in enumerate(picks):
        _, gi, name, i = candidates[p]
        by_shard[(gi, name)].append((slot, i))
    items: list[str] = [""] * k
    for (gi, name), wanted in by_shard.items():  # one shard's picked rows in memory at a time
        for (slot, _), row in zip(wanted, _read_picked(regions[gi].build, name, [i for _, i in wanted])):
            items[slot] = _gallery_item(slot, row, img)

    colours = _colours(regions)
    legend = f'<span class="sw" style="background:{KEPT}"></span>kept' + "".join(f'<span class="sw" style="background:{c}"></span>{_e(r)}' for r, c in colours.items())
    maps = "".join(
        f"<figure>{_region_svg(g, colours)}<figcaption>{_e(g.build.region_id)}: {len(g.lat)} points, "
        f"{sum(r is None for r in g.reason)} kept</figcaption></figure>"
        for g in regions
    )
    title = f"corebuild report: {url}"
    page = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1><p>{len(regions)} region build(s); generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. "
        '<a href="#summary">regions</a> · <a href="#quota">quota</a> · <a href="#coverage">coverage</a> · <a href="#failures">failures</a> · <a href="#text">text</a> · '
        '<a href="#provenance">provenance</a> · <a href="#eval">evaluation</a> · <a href="#gallery">gallery</a></p>',
        _tables(regions, _pooled_stats(regions, seed)),
        f'<h2 id="coverage">Coverage</h2>{_world(regions, img)}<p>{legend}</p><div class="maps">{maps}</div>',
        _evaluations(builds),
        f'<h2 id="gallery">Gallery</h2><p>{k} of {len(candidates)} kept rows (seed {seed}). OCR boxes: '
        f'<span style="background:#000;color:#ffdd00">evidence</span> <span style="background:#000;color:#f0f">dropped</span>. '
        "QC: kept rows store no QC flags (a failed check makes a failure row, counted above as qc.* / describe.*); "
        "the lines below re-run the sign-text grounding check on the row.</p>",
        "\n".join(items),
        "</body></html>",
    ]
    index = out / "index.html"
    index.write_text("\n".join(page), encoding="utf-8")
    return index


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("build", help="<output>/<region> or an output root with several regions (local path or gs://)")
    p.add_argument("--out", default=None, help="report folder (default <build>/report; required for gs://)")
    p.add_argument("--gallery", type=int, default=48, help="kept rows in the gallery")
    p.add_argument("--seed", type=int, default=0, help="gallery sample seed")


def main(args: argparse.Namespace) -> int:
    out = args.out
    if out is None:
        storage = open_storage(args.build)
        if not isinstance(storage, LocalStorage):
            raise CorebuildError(f"{args.build}: --out is required for a build that is not local")
        out = storage.root / "report"
    print(write_report(args.build, out, args.gallery, args.seed))
    return 0


if __name__ == "__main__":
    import sys

    ap = argparse.ArgumentParser(prog="python -m corebuild.dataset.report", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    try:
        sys.exit(main(ap.parse_args()))
    except CorebuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
