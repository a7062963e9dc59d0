"""The build progress bar follows completion markers in the output storage."""

import io
import logging
import time

from corebuild.running.progress import UnitProgress
from corebuild.shards.units import marker_name
from corebuild.shards.storage import open_storage


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(store, stream, **kw) -> UnitProgress:
    store.write(marker_name("r", 0), b"{}")  # done before this attempt
    with UnitProgress(store, "r", 4, 10, poll_s=0.02, stream=stream, **kw) as prog:
        for u in (1, 2, 3):
            time.sleep(0.1)
            store.write(marker_name("r", u), b"{}")
        time.sleep(0.15)
    return prog


def test_bar_on_a_terminal_counts_units_and_rate(tmp_path):
    out = Tty()
    prog = _run(open_storage(str(tmp_path)), out)
    assert prog.seen[0][1] == 1 and prog.seen[-1][1] == 4
    text = out.getvalue()
    assert "4/4" in text and "rows/s" in text and text.startswith("\rr:")


def test_log_lines_when_not_a_terminal(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="corebuild.running.progress")
    out = io.StringIO()
    _run(open_storage(str(tmp_path)), out, log_every_s=0.05)
    assert out.getvalue() == ""  # no bar escape codes in a log file
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(m.startswith("progress r: ") for m in lines) and any("/4 units" in m for m in lines)


def test_a_listing_failure_never_breaks_the_build(tmp_path, caplog):
    class Broken:
        url = "gs://nope/x"

        def list(self, prefix):
            raise OSError("no network")

        def join(self, rel):
            return f"{self.url}/{rel}"

    with UnitProgress(Broken(), "r", 3, 10, poll_s=0.01, stream=Tty()):
        time.sleep(0.05)
    assert "progress off" in caplog.text


def test_off_when_disabled(tmp_path):
    with UnitProgress(open_storage(str(tmp_path)), "r", 3, 10, enabled=False) as prog:
        pass
    assert prog.seen == []


def test_transient_failures_and_retried_units_are_counted(tmp_path, caplog):
    """The log line says how many transient failure rows the finished units hold; in a retry
    pass a finished unit counts again only once its marker says this attempt rewrote it."""
    import json

    caplog.set_level(logging.INFO, logger="corebuild.running.progress")
    store = open_storage(str(tmp_path))
    for u in (0, 1):
        store.write(marker_name("r", u), json.dumps({"attempt": 1, "failure_classes": {"transient": 2, "permanent": 1}}).encode())
    prog = UnitProgress(store, "r", 3, 10, stream=io.StringIO(), retry_units=frozenset({1}))
    assert prog.poll() == (1, 4)  # unit 1 waits for its rewrite
    store.write(marker_name("r", 1), json.dumps({"attempt": 2, "failure_classes": {"permanent": 1}}).encode())
    store.write(marker_name("r", 2), json.dumps({"attempt": 2, "failure_classes": {"transient": 1}}).encode())
    assert prog.poll() == (3, 3)
    with UnitProgress(store, "r", 3, 10, poll_s=0.02, log_every_s=0.0, stream=io.StringIO()):
        time.sleep(0.1)
    assert any("3 transient failure row(s) so far" in r.getMessage() and "--retry-failed" in r.getMessage() for r in caplog.records)


def test_a_top_up_round_says_its_round_and_kept_samples(tmp_path, caplog):
    """Round 2 names itself and shows kept samples against the target; the unit it grows (same
    attempt, so no attempt number tells) counts once its marker is another version."""
    import json

    caplog.set_level(logging.INFO, logger="corebuild.running.progress")
    store = open_storage(str(tmp_path))
    store.write(marker_name("r", 0), json.dumps({"attempt": 1, "generation": 0, "status_counts": {"kept": 8}}).encode())
    prog = UnitProgress(store, "r", 2, 10, stream=io.StringIO(), retry_units=frozenset({0}), round_no=2, target=12)
    assert prog.poll() == (0, 0) and prog.kept == 8
    store.write(marker_name("r", 0), json.dumps({"attempt": 1, "generation": 1, "status_counts": {"kept": 9}}).encode())
    assert prog.poll() == (1, 0) and prog.kept == 9
    out = Tty()
    with UnitProgress(store, "r", 2, 10, poll_s=0.02, stream=out, round_no=2, target=12):
        time.sleep(0.1)
    assert out.getvalue().startswith("\rr round 2:") and "kept 9/12" in out.getvalue()
