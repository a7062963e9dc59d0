"""The golden test: the demo build's rows (every column but build identity and timings) and its
manifest counts, recorded before the stage-interface move, must stay identical. It runs the
command line, so flags -> config -> stages -> shards is the path under test.

The whole demo (600 points, duplicates included) was recorded too, in tests/golden/demo-600.json:
too slow for the suite (~5 min), checked by hand:
    make build-region REGION=demo && python -m tests.golden.digest build/demo tests/golden/demo-600.json

A change that means to alter rows re-records the files (and says why in its commit):
    python -m corebuild build --region demo --output /tmp/g --limit 40 --workers 1
    python -m tests.golden.digest /tmp/g/demo > tests/golden/demo-40.json
"""

from __future__ import annotations

import json
from pathlib import Path

from corebuild.cli import main
from tests.golden.digest import differences, digest

GOLDEN = Path(__file__).parents[1] / "golden" / "demo-40.json"


def test_the_demo_build_is_unchanged(tmp_path):
    assert main(["build", "--region", "demo", "--output", str(tmp_path), "--limit", "40", "--workers", "1", "--no-progress"]) == 0
    got = digest(tmp_path / "demo")
    want = json.loads(GOLDEN.read_text())
    assert got["rows"] == 40 and len(got["columns"]) > 50
    assert differences(want, got) == []
