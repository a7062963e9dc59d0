"""`corebuild card BUILD [--split SPLITFILE]`: a Hugging Face dataset card for a region build.

Writes `BUILD/README.md`: YAML front matter the Hub and `datasets.load_dataset(BUILD)` read
(licence mix, task categories, size category, pretty name, and `configs` whose `data_files` say
which files make each split), then what the dataset is: size and counts (manifest.json), its
licences and the per-row attribution columns, how the texts were made, its columns, text
statistics next to CVG-Text's, evaluation results found under `BUILD/eval/`, and known limits.

How splits reach `datasets`: a shard holds rows of every split, and `datasets` wants a list of
files per split. So with `--split` (a `corebuild splits` file) the card writes, beside the
shards, `BUILD/data/<split>-NNNNN.parquet`: a copy of the kept rows of each split (train, val,
test; rows the split file excludes are left out), in the shard schema, at most ~256 MB of Arrow
data per file; the card states what the copy costs. Without `--split` there is one split,
`train`: the shards manifest.json lists, as they are, failed rows included (filter `status`).
When several licences apply (or one the Hub does not list), `license: other` points at
`BUILD/LICENSE.md`, which lists them with the rows under each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from corebuild.dataset.reader import BuildRef, open_build
from corebuild.dataset.splits import SPLITS, load_split
from corebuild.dataset.stats import CVG_TEXT, text_stats
from corebuild.errors import CorebuildError
from corebuild.licenses import License, license_of
from corebuild.shards.manifest import UNRECORDED
from corebuild.shards.schema import COLUMN_DOCS, shard_schema
from corebuild.shards.storage import open_parquet

DATA_DIR = "data"
MAX_FILE_BYTES = 256 * 2**20  # Arrow bytes per data file before the next one starts
# Hub task categories (datasets.utils.metadata.known_task_ids): descriptions to aerial/street
# images (cross-view retrieval and geo-localization by text) and back.
TASK_CATEGORIES = ("text-to-image", "image-to-text")
TAGS = ("geospatial", "cross-view-geo-localization", "text-to-image-retrieval", "street-view", "aerial-imagery", "geoparquet")
# Hub size categories (datasets/utils/resources/size_categories.json): (upper bound, name).
SIZE_CATEGORIES = (
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
)
LICENSE_COLUMNS = {"street": "street_license", "aerial": "aerial_license", "map": "map_license"}
LIGHT_COLUMNS = ("sample_id", "status", "description", *LICENSE_COLUMNS.values(), "street_attribution", "aerial_attribution")


def size_category(n: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if n < bound), "n>1B")


@dataclass
class Published:
    """What the card's `configs` publish: files, rows and bytes per split, and what the rows say."""

    files: dict[str, list[str]] = field(default_factory=dict)  # split -> paths relative to the build
    rows: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    copied: bool = False  # data/ copies (a split file) rather than the shards themselves
    failed_rows: int = 0  # failed rows among them (only when the shards are published as they are)
    columns: list[str] = field(default_factory=list)
    licenses: dict[str, Counter] = field(default_factory=lambda: {part: Counter() for part in LICENSE_COLUMNS})
    attributions: dict[str, Counter] = field(default_factory=lambda: {"street": Counter(), "aerial": Counter()})
    texts: list[str] = field(default_factory=list)

    def note(self, t: pa.Table) -> None:
        """Count the kept rows of `t` (licences, attributions, descriptions)."""
        cols = t.select([c for c in LIGHT_COLUMNS if c in t.column_names]).to_pydict()
        n, nones = t.num_rows, [None] * t.num_rows
        for i in range(n):
            if cols["status"][i] != "kept":
                continue
            for part, col in LICENSE_COLUMNS.items():
                lic = cols.get(col, nones)[i]
                if lic is not None or part != "map":  # no map crop: no map licence to count
                    self.licenses[part][lic or UNRECORDED] += 1
            for part in self.attributions:
                a = cols.get(f"{part}_attribution", nones)[i]
                if a:
                    self.attributions[part][a] += 1
            if cols.get("description", nones)[i]:
                self.texts.append(cols["description"][i])


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """`t` in `schema`: a column an older shard lacks is null (its rows are copied all the same)."""
    arrays = [t[f.name].cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


class _SplitFiles:
    """`data/<split>-NNNNN.parquet`, a new file every MAX_FILE_BYTES of Arrow data."""

    def __init__(self, build: BuildRef, split: str, schema: pa.Schema, max_bytes: int):
        self.build, self.split, self.schema, self.max_bytes = build, split, schema, max_bytes
        self.names: list[str] = []
        self.bytes = self.rows = 0
        self._writer: Optional[pq.ParquetWriter] = None
        self._spool: Any = None
        self._in_file = 0

    def _open(self) -> None:
        name = f"{DATA_DIR}/{self.split}-{len(self.names):05d}.parquet"
        self.names.append(name)
        self._spool = self.build.storage.spool_path(name)
        self._writer = pq.ParquetWriter(str(self._spool), self.schema, compression="zstd")
        self._in_file = 0

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.bytes += os.path.getsize(self._spool)
            self.build.storage.write_file(self.names[-1], self._spool)
            self._writer = None

    def add(self, t: pa.Table) -> None:
        if t.num_rows == 0:
            return
        if self._writer is None or self._in_file >= self.max_bytes:
            self._close()
            self._open()
        self._writer.write_table(t, row_group_size=32)
        self._in_file += t.nbytes
        self.rows += t.num_rows

    def finish(self) -> None:
        self._close()


def publish(build: BuildRef, split_url: Optional[str], max_bytes: int = MAX_FILE_BYTES) -> Published:
    """Write the data files of a split file (or none) and count what they hold."""
    out = Published()
    names = build.shard_names()
    if split_url is None:
        out.files["train"] = names
        out.rows["train"] = sum(s.get("rows", 0) for s in build.manifest.get("shards", []))
        out.bytes["train"] = sum(s.get("bytes", 0) for s in build.manifest.get("shards", []))
        seen: set[str] = set()
        for name in names:
            pf = open_parquet(build.storage, name)
            have = set(pf.schema_arrow.names)
            seen |= have
            t = pf.read(columns=[c for c in LIGHT_COLUMNS if c in have], use_threads=False)
            out.failed_rows += int(pc.sum(pc.equal(t["status"], "failed")).as_py() or 0)
            out.note(t)
        out.columns = [c for c in shard_schema().names if c in seen]
        return out
    sets = {s: pa.array(sorted(load_split(split_url, s)), pa.string()) for s in SPLITS}
    storage = build.storage
    for old in storage.list(f"{DATA_DIR}/"):  # a previous card's copies: replaced, never mixed in
        storage.delete(old)
    schema = shard_schema()
    files = {s: _SplitFiles(build, s, schema, max_bytes) for s in SPLITS}
    for name in names:
        t = _conform(build.read_table(name), schema)
        kept = pc.equal(t["status"], "kept")
        for s in SPLITS:
            part = t.filter(pc.and_(kept, pc.is_in(t["sample_id"], value_set=sets[s])))
            files[s].add(part)
            out.note(part)
    for s, f in files.items():
        f.finish()
        out.rows[s], out.bytes[s] = f.rows, f.bytes
        if f.names:  # an empty split has no file, and no entry `datasets` would refuse ("corresponds to no data")
            out.files[s] = [f"{DATA_DIR}/{s}-*.parquet"]
    out.copied, out.columns = True, list(schema.names)
    return out


# --- the card -------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def license_metadata(ids: list[str]) -> dict[str, Any]:
    """The front matter's licence keys for the licences `ids` (rows of any part under each)."""
    lics = [license_of(i) for i in ids]
    if not lics:
        return {"license": "unknown"}
    if all(lic.hub for lic in lics):
        hubs = sorted({lic.hub for lic in lics})
        return {"license": hubs[0] if len(hubs) == 1 else hubs}
    link = lics[0].url if len(lics) == 1 and lics[0].url else "LICENSE.md"
    return {"license": "other", "license_name": "-and-".join(_slug(lic.id.removeprefix("LicenseRef-")) for lic in lics), "license_link": link}


def front_matter(build: BuildRef, pub: Published, pretty_name: str) -> dict[str, Any]:
    ids = sorted({i for c in pub.licenses.values() for i in c if i != UNRECORDED})
    kept = sum(pub.rows.values()) - pub.failed_rows
    return {
        "pretty_name": pretty_name,
        **license_metadata(ids),
        "task_categories": list(TASK_CATEGORIES),
        "tags": list(TAGS),
        "size_categories": [size_category(kept)],
        "configs": [{"config_name": "default", "data_files": [{"split": s, "path": p if len(p) != 1 else p[0]} for s, p in pub.files.items()]}],
    }


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else "–" if x is None else str(x)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(esc(v) for v in r) + " |" for r in rows), ""]


def _read_json(build: BuildRef, rel: str) -> Optional[Any]:
    try:
        raw = build.storage.read(rel)
        return json.loads(raw) if raw else None
    except (ValueError, OSError):
        return None


def _recalls(doc: Any, path: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """(path, metrics) for every dict in a retrieval report that holds recall@K values."""
    if not isinstance(doc, dict):
        return []
    if any(isinstance(k, str) and k.startswith("recall@") for k in doc):
        return [(" / ".join(path), doc)]
    return [r for k, v in doc.items() if k not in ("config", "timings") for r in _recalls(v, path + (str(k),))]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, dict):  # chance per K
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items() if str(k).startswith("recall@")) or "–"
    return _n(v)


def results_section(build: BuildRef) -> list[str]:
    lines = ["## Results", ""]
    reports = sorted(n for n in build.storage.list("eval/") if re.fullmatch(r"eval/retrieval-[^/]+\.json", n))
    for name in reports:
        doc = _read_json(build, name)
        found = _recalls(doc.get("aerial", doc) if isinstance(doc, dict) else doc, ("aerial",)) if isinstance(doc, dict) else []
        if isinstance(doc, dict) and isinstance(doc.get("map"), dict):
            found += _recalls(doc["map"], ("map",))
        lines += [f"Text→image retrieval baseline (`corebuild eval retrieval`), `{name}`"
                  + (f" (split file `{doc.get('split_file')}`)" if isinstance(doc, dict) and doc.get("split_file") else "") + ":", ""]
        if not found:
            lines += ["(no Recall@K values in this report)", ""]
            continue
        ks = sorted({k for _, m in found for k in m if str(k).startswith("recall@")}, key=lambda k: int(k.split("@")[1]) if k.split("@")[1].isdigit() else 0)
        lines += _table(["what", "queries", *ks, "chance"], [[p.replace(" / splits", ""), _n(m.get("queries")), *(_fmt(m.get(k)) for k in ks), _fmt(m.get("chance"))] for p, m in found])
    fid = _read_json(build, "eval/fidelity.json")
    if isinstance(fid, dict):
        overall = fid.get("overall") or {}
        lines += [f"Fidelity to the synthetic world (`corebuild eval fidelity`, `eval/fidelity.json`): {_n(fid.get('rows_checked'))} rows checked, "
                  f"{_n(overall.get('claims'))} claims, precision {_fmt(overall.get('precision'))}.", ""]
        claims = fid.get("claims") if isinstance(fid.get("claims"), dict) else {}
        if claims:
            lines += _table(["claim", "claims", "true", "precision"], [[k, _n(v.get("claims")), _n(v.get("true")), _fmt(v.get("precision"))] for k, v in claims.items() if isinstance(v, dict)])
    if len(lines) == 2:
        lines += ["No evaluation yet: `corebuild eval retrieval` and `corebuild eval fidelity` write `eval/*.json`, which this card lists.", ""]
    return lines


def licence_section(pub: Published) -> list[str]:
    parts = [p for p in LICENSE_COLUMNS if pub.licenses[p]]
    ids = sorted({i for p in parts for i in pub.licenses[p]})
    rows = []
    for i in ids:
        lic = license_of(i) if i != UNRECORDED else License(UNRECORDED, "not recorded (rows written before licences were)", redistributable=False)
        rows.append([f"`{i}`", lic.name, lic.url or "–", "yes" if lic.redistributable else "**no**", *(_n(pub.licenses[p].get(i, 0)) for p in parts)])
    lines = ["## Licences and attribution", "",
             "Each image keeps its source's licence; the rows say which, one SPDX id (or `LicenseRef-...` for a provider's terms) per image:",
             "`street_license`, `aerial_license` (and `map_license`), with the attribution the terms ask for in `street_attribution`,",
             "`aerial_attribution` (and `map_attribution`). Kept rows per licence:", "",
             *_table(["licence", "name", "link", "redistributable", *(f"{p} rows" for p in parts)], rows)]
    if any(not license_of(i).redistributable for i in ids):
        lines += ["**Some images here may not be redistributed** (provider terms, or no licence stated): keep this build private, or publish",
                  "only rows whose licences allow it (filter on the licence columns).", ""]
    for part, c in pub.attributions.items():
        if c:
            top = ", ".join(f"\"{a}\" ({n})" for a, n in c.most_common(3))
            lines += [f"Most frequent {part} attributions: {top}" + (f", and {len(c) - 3} more" if len(c) > 3 else "") + ".", ""]
    lines += ["The descriptions are generated from the images and inherit nothing from them but what they show; "
              "the card does not license them separately.", ""]
    return lines


def card_markdown(build: BuildRef, pub: Published, split_url: Optional[str], pretty_name: str) -> str:
    m = build.manifest
    counts, models, region = m.get("counts") or {}, m.get("models") or {}, m.get("region") or {}
    fm = front_matter(build, pub, pretty_name)
    lines = ["---", yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, width=1000).rstrip(), "---", "", f"# {pretty_name}", ""]
    lines += [
        f"Cross-view geo-localization data for **{region.get('name', build.region_id)}** ({region.get('country', '?')}, {region.get('continent', '?')}),",
        "built by corebuild: each kept row pairs a street-level view (one or more headings) with a north-up aerial crop centred where",
        "the camera stood, and a scene description generated from the street view and the signs read in it (OCR). Rows are",
        "GeoParquet (`geometry`: the sampled point, WKB, OGC:CRS84). For text→aerial retrieval and text-based geo-localization.",
        "",
        f"Build `{m.get('build_id', '?')}` (config hash `{m.get('config_hash', '?')}`, code `{m.get('code_version', '?')}`).",
        "",
        "## Size and splits",
        "",
    ]
    lines += _table(["sampled points", "rows", "kept", "failed", "shards"],
                    [[_n(counts.get("sampled")), _n(counts.get("rows")), _n(counts.get("kept")), _n(counts.get("failed")), _n(len(m.get("shards", [])))]])
    reasons = counts.get("failed_by_reason") or {}
    if reasons:
        lines += ["Failed rows by reason: " + ", ".join(f"`{k}` {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) + ".", ""]
    shard_bytes = sum(s.get("bytes", 0) for s in m.get("shards", []))
    files = {s: pub.files.get(s, []) for s in pub.rows}
    lines += _table(["split", "rows", "files", "size"], [
        [s, _n(pub.rows[s]), ", ".join(f"`{p}`" for p in f[:3]) + (" …" if len(f) > 3 else "") if f else "none (empty: not in `configs`)", _mb(pub.bytes[s])]
        for s, f in files.items()
    ])
    if pub.copied:
        copy = sum(pub.bytes.values())
        lines += [f"Splits from `{split_url}` (`corebuild splits`: geographic blocks, no leakage across splits). A shard mixes splits, so",
                  f"`corebuild card --split` copied each split's kept rows to `{DATA_DIR}/<split>-NNNNN.parquet` (shard schema): the copy costs",
                  f"{_mb(copy)} beside the shards' {_mb(shard_bytes)}" + (f" ({copy / shard_bytes:.0%})" if shard_bytes else "") + ". Rows the split file excludes are not copied.", ""]
    else:
        lines += ["No split file was given: one `train` split, the shards themselves (no copy), failed rows included"
                  + (f" ({_n(pub.failed_rows)} of them)" if pub.failed_rows else "") + ": keep `status == \"kept\"`.",
                  "`corebuild card BUILD --split <corebuild splits file>` publishes train/val/test instead.", ""]
    lines += ["```python", "from datasets import load_dataset", "",
              "ds = load_dataset(\"path/to/this/build\")  # the `default` config: " + ", ".join(pub.files), "```", ""]
    lines += licence_section(pub)
    prompt = models.get("prompt") or {}
    cov = counts.get("ocr_coverage") or {}
    ocr_cov = models.get("ocr_coverage") or {}
    lines += ["## How the texts were made", ""]
    lines += _table(["", ""], [
        ["describer", f"`{models.get('describer', '?')}`"],
        ["prompt", f"`{prompt.get('id', '?')}` (sha256 prefix `{prompt.get('hash', '?')}`, in `prompts/`)"],
        ["OCR", f"`{models.get('ocr', '?')}`; languages read: {', '.join(ocr_cov.get('read') or []) or '–'}; not read: {', '.join(ocr_cov.get('unread') or []) or 'none'}"],
        ["OCR coverage of kept rows", ", ".join(f"{k} {_n(cov.get(k))}" for k in ("full", "partial", "none") if k in cov) or "–"],
        ["segmentation", f"`{models.get('segmentation')}`" if models.get("segmentation") else "off"],
    ])
    lines += ["Descriptions mention sign text only where OCR read it (sign text in a script no reader read is listed in",
              "`signs_unverifiable`, not checked). Each row records its describer, model, prompt id and hash.", ""]
    stats = text_stats(pub.texts)
    lines += ["## Text statistics", "", f"Over the {_n(stats['texts'])} descriptions published here, next to CVG-Text's:", ""]
    lines += _table(["measure", "this dataset", "CVG-Text"], [[k, _fmt(float(stats[k])), _fmt(CVG_TEXT[k])] for k in ("mean_tokens", "type_token_ratio", "mean_similarity")])
    lines += results_section(build)
    lines += ["## Columns", "", "As in `docs/schema.md` (generated from `corebuild/shards/schema.py`):", ""]
    lines += _table(["column", "meaning"], [[f"`{c}`", COLUMN_DOCS.get(c, "")] for c in pub.columns])
    unrecorded = sum(c.get(UNRECORDED, 0) for c in pub.licenses.values())
    lines += ["## Known limits", "",
              "- Descriptions are machine-written: they can claim what the image does not show (see fidelity above, where measured).",
              "- One region: its streets, its season and capture years; the aerial crop's date differs from the street view's.",
              "- Sampled points snap to the nearest imagery (`street_distance_m`); deduplication keeps one image per panorama or sequence.",
              "- Splits are geographic blocks of one region: they test new places nearby, not new regions."]
    if ocr_cov.get("unread"):
        lines.append(f"- OCR read none of {', '.join(ocr_cov['unread'])}: sign text in those scripts is not evidence here.")
    if unrecorded:
        lines.append(f"- {unrecorded} image licences are not recorded (rows written before licences were): check them before publishing.")
    if reasons:
        lines.append("- Failed points are rows too (`status`), so the kept rows are not a uniform sample of the region.")
    return "\n".join(lines) + "\n"


def licence_file(pub: Published) -> str:
    return "# Licences\n\nThe images of this dataset come under these licences (kept rows per licence):\n\n" + "\n".join(licence_section(pub)[5:]) + "\n"


def write_card(build_url: str, split_url: Optional[str] = None, pretty_name: Optional[str] = None, max_bytes: int = MAX_FILE_BYTES) -> dict[str, Any]:
    build = open_build(build_url)
    region = build.manifest.get("region") or {}
    name = pretty_name or f"corebuild cross-view: {region.get('name') or build.region_id}"
    pub = publish(build, split_url, max_bytes)
    text = card_markdown(build, pub, split_url, name)
    build.storage.write("README.md", text.encode("utf-8"))
    fm = front_matter(build, pub, name)
    if fm.get("license_link") == "LICENSE.md":
        build.storage.write("LICENSE.md", licence_file(pub).encode("utf-8"))
    return {"readme": build.storage.join("README.md"), "front_matter": fm, "rows": pub.rows, "bytes": pub.bytes}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build", help="a region build (has manifest.json): local path or gs:// URL")
    parser.add_argument("--split", metavar="SPLITFILE", default=None,
                        help="a `corebuild splits` file: its train/val/test kept rows are copied to BUILD/data/<split>-*.parquet (default: one train split, the shards)")
    parser.add_argument("--pretty-name", default=None, help="the card's title (default: corebuild cross-view: <region name>)")


def main(args: argparse.Namespace) -> int:
    try:
        res = write_card(args.build, args.split, args.pretty_name)
    except (CorebuildError, OSError, ValueError) as exc:
        print(f"corebuild card: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {res['readme']}: " + ", ".join(f"{s} {n} rows ({_mb(res['bytes'][s])})" for s, n in res["rows"].items()) + f"; license {res['front_matter']['license']}")
    return 0
