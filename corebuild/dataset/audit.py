"""`corebuild audit`: a seeded sample of a build's rows (CVG-Text checked 20 % by hand) as an
HTML sheet to look at (street view, aerial crop, description, evidence, QC) and a CSV with empty
`verdict` / `notes` columns for the checker."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from typing import Any

import numpy as np

COLUMNS = ["sample_id", "status", "failure_reason", "description", "describer_backend", "describer_model", "prompt_id", "ocr", "street_views", "aerial_image", "aerial_format", "lat", "lon"]
# Columns newer than some builds: read where the shard has them.
LATER = ["ocr_languages_unread", "signs_unverifiable"]


def sample_rows(storage, region_prefix: str, fraction: float, seed: int = 0, include_failed: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    from corebuild.dataset.reader import listed_shards
    from corebuild.shards.storage import open_parquet

    for name in listed_shards(storage, region_prefix):  # only committed shards
        pf = open_parquet(storage, name)
        t = pf.read(columns=COLUMNS + [c for c in LATER if c in pf.schema_arrow.names], use_threads=False)
        rows += [{**dict.fromkeys(LATER), **r} for r in t.to_pylist() if include_failed or r["status"] == "kept"]
    rows.sort(key=lambda r: r["sample_id"])
    k = max(1, round(len(rows) * fraction)) if rows else 0
    pick = sorted(np.random.default_rng(seed).choice(len(rows), size=k, replace=False).tolist()) if k else []
    return [rows[i] for i in pick]


def _img(data: bytes, fmt: str, width: int) -> str:
    return f'<img width="{width}" src="data:image/{html.escape(fmt or "jpeg")};base64,{base64.b64encode(data).decode()}">'


def render_html(rows: list[dict[str, Any]], title: str) -> str:
    out = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif} td{vertical-align:top;padding:6px;border-bottom:1px solid #ccc} .dropped{color:#999;text-decoration:line-through}</style>",
        f"<h1>{html.escape(title)}</h1><p>{len(rows)} rows. Mark each row in the CSV: verdict = ok / wrong / unsure.</p>",
        "<table><tr><th>sample</th><th>street (first heading)</th><th>aerial</th><th>description</th><th>OCR evidence</th></tr>",
    ]
    for r in rows:
        views = r["street_views"] or []
        street = _img(views[0]["image"], views[0]["format"], 240) if views else ""
        aerial = _img(r["aerial_image"], r["aerial_format"], 200) if r["aerial_image"] else ""
        ocr = "<br>".join(
            f"<span class='{'dropped' if o.get('dropped') else ''}'>{html.escape(o['text'])} ({o['heading']:g}°, {o['confidence']:.2f})</span>" for o in r["ocr"] or []
        )
        if r.get("signs_unverifiable"):  # sign text QC could not check: no reader here reads its script
            ocr += "<br><b>unverifiable</b> (" + html.escape(", ".join(r.get("ocr_languages_unread") or ())) + " not read): " + html.escape(" · ".join(r["signs_unverifiable"]))
        status = r["status"] + (f": {html.escape(r['failure_reason'])}" if r["failure_reason"] else "")
        out.append(
            f"<tr id='{html.escape(r['sample_id'])}'><td>{html.escape(r['sample_id'])}<br>{status}<br>{r['lat']:.6f}, {r['lon']:.6f}</td>"
            f"<td>{street}</td><td>{aerial}</td><td>{html.escape(r['description'] or '')}<br><small>{html.escape(str(r['describer_backend']))} / "
            f"{html.escape(str(r['describer_model']))} / {html.escape(str(r['prompt_id']))}</small></td><td>{ocr}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def render_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["sample_id", "status", "description", "ocr", "unverifiable", "verdict", "notes"])
    for r in rows:
        w.writerow([r["sample_id"], r["status"], r["description"] or "", json.dumps([o["text"] for o in r["ocr"] or [] if not o.get("dropped")], ensure_ascii=False),
                    json.dumps(list(r.get("signs_unverifiable") or ()), ensure_ascii=False), "", ""])
    return buf.getvalue()
