"""bench/table.py: BENCH lines in, one table out (no benchmark runs here)."""

import importlib.util
import json
import sys

import pytest

from tests.conftest import ROOT

BENCH_DIR = ROOT / "bench"


def _module(name: str):
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def table():
    return _module("table")


@pytest.fixture(scope="module")
def benchline():
    return _module("benchline")


def test_emit_and_parse_round_trip(benchline, capsys):
    benchline.emit("x.rate", "x rate", 12.5, "req/s", ">= 10 req/s", True, "fine", n=3)
    benchline.emit("x.nan", "x nan", float("nan"), "s", "none stated (figure)", None)
    out = capsys.readouterr().out
    text = "human line\n" + out + "BENCH {not json\nBENCH [1, 2]\n  BENCH {\"key\": \"indented\"}\n"
    rows = benchline.parse(text)
    assert [r["key"] for r in rows] == ["x.rate", "x.nan"]
    assert rows[0] == {"key": "x.rate", "name": "x rate", "value": 12.5, "unit": "req/s", "target": ">= 10 req/s", "met": True, "detail": "fine", "n": 3}
    assert rows[1]["value"] is None and rows[1]["met"] is None


def _run(rows, rc=0, **kw):
    return {"bench": "b", "rc": rc, "timed_out": False, "timeout_s": 60, "wall_s": 5.0, "rows": rows, "tail": "", **kw}


def test_rows_follow_the_expected_order_and_keep_extra_rows(table):
    bench = table.BY_NAME["sampling"]
    got = [
        {"key": "sampling.peak_rss", "name": "sampling peak RSS", "value": 0.27, "unit": "GB", "target": "< 2 GB", "met": True},
        {"key": "sampling.extra", "name": "an extra figure", "value": 3, "unit": "s", "target": "none stated (figure)", "met": None},
        {"key": "sampling.points_per_s", "name": "sampling points/s", "value": 1.0, "unit": "points/s", "target": "t", "met": False},
        {"key": "sampling.points_per_s", "name": "sampling points/s", "value": 347000.0, "unit": "points/s", "target": "t", "met": True},
    ]
    rows = table.rows_for(bench, _run(got))
    assert [r["key"] for r in rows] == ["sampling.points_per_s", "sampling.peak_rss", "sampling.extra"]
    assert rows[0]["value"] == 347000.0  # the last line of a key wins
    assert all(r["bench"] == "sampling" for r in rows)


def test_a_failed_timed_out_or_skipped_bench_still_gives_its_rows(table):
    bench = table.BY_NAME["load"]
    failed = table.rows_for(bench, _run([], rc=1, tail="starting\nTraceback ...\nRuntimeError: server failed to start\n"))
    assert [r["key"] for r in failed] == ["load.peak_rss", "load.rows_per_s"]
    assert all(r["value"] is None and "failed (rc 1)" in r["detail"] and "server failed to start" in r["detail"] for r in failed)
    timed = table.rows_for(bench, _run([], rc=None, timed_out=True, timeout_s=14400))
    assert "timed out after 14,400 s" in timed[0]["detail"]
    cannot = table.rows_for(table.BY_NAME["gpu_describe"], _run([], rc=2, tail="cannot run here: vllm is not installed\n"))
    assert cannot[0]["detail"] == "cannot run here: vllm is not installed"
    skipped = table.rows_for(table.BY_NAME["gpu_describe"], {"bench": "gpu_describe", "skipped": "not run: needs a GPU"})
    assert skipped[0]["detail"] == "not run: needs a GPU"
    assert table.rows_for(bench, None)[0]["detail"] == "not run"
    # rows printed before a crash are kept, and say the bench broke
    partial = table.rows_for(bench, _run([{"key": "load.rows_per_s", "name": "n", "value": 18.0, "unit": "rows/s", "target": "t", "met": None}], rc=1, tail="boom\n"))
    assert partial[1]["value"] == 18.0 and "[bench: failed (rc 1)" in partial[1]["detail"]


def test_values_and_met_are_formatted(table):
    assert table.fmt_value(347123.4, "points/s") == "347,123 points/s"
    assert table.fmt_value(3.2417, "x") == "3.24×"
    assert table.fmt_value(181.6, "ms") == "182 ms"
    assert table.fmt_value(18.22, "rows/s") == "18.2 rows/s"
    assert table.fmt_value(0.9991, "") == "1.00"
    assert table.fmt_value(0.0123, "GB") == "0.0123 GB"
    assert table.fmt_value(None, "s") == "—"
    assert [table.fmt_met({"value": 1, "met": m}) for m in (True, False, None)] == ["yes", "NO", "n/a"]
    assert table.fmt_met({"value": None, "met": True}) == "—"


def test_text_and_markdown_tables(table):
    rows = [
        {"name": "describe client req/s", "value": 840.0, "unit": "req/s", "target": ">= 200 req/s", "met": True, "detail": "2000/2000 ok"},
        {"name": "a | piped name", "value": None, "unit": "", "target": "t", "met": None, "detail": "not run", "missing": True},
    ]
    text = table.format_text(rows).splitlines()
    assert text[0].split() == ["figure", "value", "target", "met"]
    assert text[2].startswith("describe client req/s") and text[2].endswith("yes")
    col = text[0].index("target")  # columns line up
    assert text[2][col:].startswith(">= 200 req/s") and text[3][col:].startswith("t ")
    assert text[2].index("840 req/s") + len("840 req/s") == text[3].index("—") + 1 == text[0].index("value") + len("value")  # values right-aligned
    assert "notes:" in text and "  describe client req/s: 2000/2000 ok" in text
    md = table.format_markdown(rows, "**header**").splitlines()
    assert md[0] == "**header**" and md[2] == "| figure | value | target | met | notes |"
    assert md[4] == "| describe client req/s | 840 req/s | >= 200 req/s | yes | 2000/2000 ok |"
    assert md[5] == "| a \\| piped name | — | t | — | not run |"


def test_saved_runs_make_a_table_without_running_anything(table, tmp_path, monkeypatch, capsys):
    run = _run([{"key": "write.ratio", "name": "Parquet MB/s vs raw disk", "value": 0.62, "unit": "x", "target": ">= 0.5x", "met": True}], started_utc="2026-01-02T03:04:05+00:00")
    table.save({**run, "bench": "write"}, tmp_path)
    monkeypatch.setattr(table, "run_bench", lambda *a, **k: pytest.fail("--use-saved must not run a bench"))
    md = tmp_path / "t.md"
    assert table.main(["--only", "write,demo", "--use-saved", "all", "--results", str(tmp_path), "--md", str(md)]) == 0
    out = capsys.readouterr().out
    assert "0.62×" in out and "[saved run of 2026-01-02]" in out
    assert f"no saved run in {tmp_path}" in out  # demo has none
    assert "| Parquet MB/s vs raw disk | 0.62× | >= 0.5x | yes |" in md.read_text()
    with pytest.raises(SystemExit, match="unknown bench"):
        table.main(["--only", "nope"])


def test_every_bench_in_bench_dir_is_in_the_table(table):
    scripts = {p.relative_to(ROOT).as_posix() for p in BENCH_DIR.glob("bench_*.py")} | {"bench/gpu_describe/run.py"}
    assert scripts == {b.script for b in table.BENCHES}
    assert json.loads(json.dumps([b.name for b in table.BENCHES]))  # names are plain strings
