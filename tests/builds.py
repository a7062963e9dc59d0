"""Generated region builds (shards + manifest.json) in the real shard schema, small and
deterministic, for tests of what reads builds (splits, reader, report) without running Beam."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from PIL import Image, ImageDraw
from shapely.geometry import Point

from corebuild.licenses import SYNTHETIC, SYNTHETIC_ATTRIBUTION
from corebuild.shards.manifest import count_shards
from corebuild.shards.storage import open_storage
from corebuild.shards.schema import COLUMNS, shard_schema

FAILURES = ("street.zero_results", "street.duplicate")


def _jpeg(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 255, 3)))
    ImageDraw.Draw(img).rectangle([8, 8, size // 2, size // 3], fill=(250, 250, 250))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def fake_rows(region_id: str, lat0: float, lon0: float, n: int, spread_m: float = 3000.0, seed: int = 0, fail_every: int = 5,
              licenses: Optional[Callable[[int], tuple[str, str]]] = None) -> list[dict]:
    """`n` rows around (lat0, lon0); every `fail_every`-th row is a failure row. Kept rows are the
    synthetic world's (CC0), or (street, aerial) licence ids `licenses(i)`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        dy, dx = rng.uniform(-spread_m, spread_m, 2)
        lat = lat0 + dy / 111320
        lon = lon0 + dx / (111320 * math.cos(math.radians(lat0)))
        row = {c.name: None for c in COLUMNS}
        row.update(
            sample_id=f"{region_id}-s{seed}-{i}", region_id=region_id, seed=seed, point_index=i, lat=lat, lon=lon,
            geometry=shapely.to_wkb(Point(lon, lat)), build_id=f"{region_id}-test", config_hash="0" * 16, code_version="test",
            stage_seconds=[],
        )
        if fail_every and i % fail_every == fail_every - 1:
            row.update(status="failed", failure_reason=FAILURES[i % 2], error="generated failure")
        else:
            d = 0.0005
            row.update(
                status="kept", street_provider="synthetic", pano_id=f"p{i}", street_lat=lat, street_lon=lon, street_distance_m=3.0,
                street_license=licenses(i)[0] if licenses else SYNTHETIC.id, street_attribution=SYNTHETIC_ATTRIBUTION,
                aerial_license=licenses(i)[1] if licenses else SYNTHETIC.id, aerial_attribution=SYNTHETIC_ATTRIBUTION,
                street_views=[
                    {"heading": float(h), "fov": 90.0, "pitch": 0.0, "width": 64, "height": 64, "format": "jpeg", "image": _jpeg(seed * 7919 + i * 4 + k)}
                    for k, h in enumerate((0, 90, 180, 270))
                ],
                aerial_provider="synthetic_aerial", aerial_image=_jpeg(10**6 + seed * 7919 + i), aerial_format="jpeg", aerial_zoom=20,
                aerial_width=64, aerial_height=64, aerial_west=lon - d, aerial_south=lat - d, aerial_east=lon + d, aerial_north=lat + d,
                aerial_center_lat=lat, aerial_center_lon=lon, aerial_gsd_m=0.15, aerial_tiles=4,
                ocr=[{"heading": 0.0, "text": f"SHOP {i}", "confidence": 0.97, "box": [8.0, 8.0, 32.0, 8.0, 32.0, 21.0, 8.0, 21.0], "dropped": None}],
                ocr_backend="rapidocr:test", description=f"A street in {region_id} with a sign reading \"SHOP {i}\" and {['trees', 'shops', 'houses'][i % 3]}.",
                describer_backend="template", describer_model="template", prompt_id="template-v1", prompt_hash="abc",
            )
        rows.append(row)
    return rows


def quota_block(n: int, fail_every: int = 5, *, quota: Optional[int] = None, rounds: int = 1, shortfall: Optional[str] = None, trimmed: int = 0, of: str = "kept") -> dict:
    """The manifest's quota block for a generated build of `n` rows (as `fake_rows` fails them):
    by default the quota is what it kept (no shortfall)."""
    kept = n - (n // fail_every if fail_every else 0)
    quota = kept if quota is None else quota
    missing = max(quota - (kept if of == "kept" else n), 0)
    return {
        "of": of, "quota": quota, "target": quota, "kept": kept, "sampled": n, "rounds": rounds, "yield": round(kept / n, 4) if n else None,
        "expected_yield": 0.5, "missing": missing, "shortfall": shortfall, "trimmed": trimmed,
    }


def write_fake_build(
    root: str | Path,
    region_id: str,
    lat0: float,
    lon0: float,
    n: int,
    *,
    continent: str = "Africa",
    country: str = "ZA",
    rows_per_shard: int = 10,
    spread_m: float = 3000.0,
    seed: int = 0,
    fail_every: int = 5,
    quota: Optional[dict] = None,
    licenses: Optional[Callable[[int], tuple[str, str]]] = None,
) -> str:
    """A finished region build at `<root>/<region_id>` (local path or gs:// URL); returns its URL.
    `quota`: the manifest's quota block (see `quota_block`); None writes a manifest without one,
    as builds from before top-up rounds have."""
    storage = open_storage(f"{str(root).rstrip('/')}/{region_id}")
    rows = fake_rows(region_id, lat0, lon0, n, spread_m, seed, fail_every, licenses)
    schema = shard_schema()
    names = []
    for k in range(0, n, rows_per_shard):
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows[k : k + rows_per_shard], schema=schema), buf, compression="zstd", row_group_size=4)
        name = f"shards/part-u{k // rows_per_shard:05d}-000.parquet"
        storage.write(name, buf.getvalue())
        names.append(name)
    counts = count_shards(storage, names)
    manifest = {
        "build_id": f"{region_id}-test",
        "region_id": region_id,
        "region": {"name": f"Test {region_id}", "country": country, "continent": continent},
        "counts": {"sampled": n, **{k: v for k, v in counts.items() if k != "shards"}},
        "consistent": True,
        "shards": counts["shards"],
    }
    if quota is not None:
        manifest["quota"] = quota
    storage.write("manifest.json", json.dumps(manifest, indent=2).encode())
    return storage.url
