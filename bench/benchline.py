"""The one machine-readable line every benchmark prints beside its human output:

    BENCH {"key": "sampling.points_per_s", "name": "sampling points/s", "value": 347000.0,
           "unit": "points/s", "target": ">= 103,479 points/s (all 1,034,786 in <= 10 s)",
           "met": true, "detail": "..."}

`key` is stable (bench/table.py matches its rows on it); `name` is what the table shows; `value`
is a number or null (not measured); `met` is true, false or null (no target stated, or not
measured); `detail` is optional free text. bench/table.py collects these lines.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Optional

PREFIX = "BENCH "


def emit(key: str, name: str, value: Optional[float], unit: str, target: str, met: Optional[bool], detail: str = "", **extra: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    doc = {"key": key, "name": name, "value": value, "unit": unit, "target": target, "met": None if met is None else bool(met)}
    if detail:
        doc["detail"] = detail
    doc.update(extra)
    print(PREFIX + json.dumps(doc, ensure_ascii=False), flush=True)
    sys.stdout.flush()


def parse(text: str) -> list[dict[str, Any]]:
    """Every well-formed BENCH line in `text`, in order; malformed ones are skipped."""
    out = []
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        try:
            doc = json.loads(line[len(PREFIX):])
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("key"), str):
            out.append(doc)
    return out
