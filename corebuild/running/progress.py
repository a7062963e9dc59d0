"""A progress bar for builds that works with any Beam runner: the driver watches completion
markers appear in the output storage (local or gs://) and shows units and rows with rates.
Beam's own counters (corebuild namespace) carry the same figures for Dataflow's monitoring UI."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Optional

from corebuild.shards.units import DONE_DIR

log = logging.getLogger("corebuild.running.progress")


class UnitProgress:
    """`with UnitProgress(storage, region, total_units, unit_points):` around the pipeline run.

    On a terminal it draws a tqdm bar; otherwise (CI, nohup, Dataflow launcher logs) it logs a
    line every `log_every_s`. Units done before this attempt count as done at the start.
    """

    def __init__(
        self, storage, region_id: str, total_units: int, unit_points: int, *, enabled: bool = True, poll_s: Optional[float] = None,
        log_every_s: float = 30.0, stream=None, retry_units: frozenset[int] = frozenset(), round_no: int = 1,
        target: Optional[int] = None,
    ):
        self.storage, self.region_id, self.total, self.unit_points = storage, region_id, total_units, unit_points
        # A top-up round (corebuild.running.rounds) says so, and shows kept samples against the
        # region's target (--quota-of kept).
        self.label = region_id + (f" round {round_no}" if round_no > 1 else "")
        self.target = target
        # A retry pass (or a top-up round) rewrites finished units: each counts once rewritten.
        self.retry_units = retry_units
        self._markers: dict[str, tuple[int, int, tuple]] = {}  # marker name -> (transient rows, kept rows, version)
        self._before: dict[str, tuple] = {}  # a unit this run rewrites -> its marker's version at the start
        self._first_poll = True
        self.enabled = enabled and total_units > 0
        # Listing a bucket costs a request per 1,000 names: poll gs:// less often.
        self.poll_s = poll_s if poll_s is not None else (10.0 if "://" in storage.url else 2.0)
        self.log_every_s, self.stream = log_every_s, stream or sys.stderr
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.seen: list[tuple[float, int]] = []  # (monotonic time, units done) at each poll

    def poll(self) -> tuple[int, int]:
        """(units finished, counting each rewritten unit once its marker changes; transient
        failure rows in the finished units). Each marker is read once, a unit this run rewrites
        (retried points, a top-up round's points added to it) until its marker changes."""
        names = [n for n in self.storage.list(f"{self.region_id}/{DONE_DIR}/") if n.endswith(".json")]

        def awaiting_rewrite(name: str) -> bool:
            return name in self._before and self._markers[name][2] == self._before[name]

        for n in names:
            if n not in self._markers or awaiting_rewrite(n):
                try:
                    doc = json.loads(self.storage.read(n) or b"{}")
                except ValueError:
                    doc = {}
                # Which version of the marker: rounds of one attempt rewrite a unit too.
                version = (doc.get("attempt"), doc.get("generation"), doc.get("finished_utc"))
                if self._first_poll and int(n.rsplit("/u", 1)[-1][:-5]) in self.retry_units:
                    self._before[n] = version  # counts once its marker is another version
                self._markers[n] = (int(doc.get("failure_classes", {}).get("transient", 0)), int(doc.get("status_counts", {}).get("kept", 0)), version)
        self._first_poll = False
        return len(names) - sum(map(awaiting_rewrite, names)), sum(m[0] for m in self._markers.values())

    @property
    def kept(self) -> int:
        """Kept rows in the markers read so far."""
        return sum(m[1] for m in self._markers.values())

    def _kept_text(self) -> str:
        return f"kept {self.kept}/{self.target}" if self.target is not None else ""

    def __enter__(self) -> "UnitProgress":
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="corebuild-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 5)

    def _run(self) -> None:
        try:
            start, transient = self.poll()
        except Exception as exc:  # progress must never break a build
            log.warning("progress off: cannot list %s: %s", self.storage.join(self.region_id), exc)
            return
        t0 = time.monotonic()
        self.seen.append((t0, start))
        bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            bar = tqdm(total=self.total, initial=start, unit="unit", desc=self.label, file=self.stream, dynamic_ncols=True)
        last_log, shown = t0, start
        while not self._stop.wait(self.poll_s):
            try:
                n, transient = self.poll()
            except Exception:
                continue
            now = time.monotonic()
            self.seen.append((now, n))
            rate = (n - start) * self.unit_points / max(now - t0, 1e-9)
            if bar is not None:
                bar.update(n - shown)
                bar.set_postfix_str(", ".join(x for x in (self._kept_text(), f"~{rate:.2f} rows/s", f"{transient} transient failures" if transient else "") if x))
            elif now - last_log >= self.log_every_s:
                eta = f"eta {(self.total - n) * self.unit_points / rate:.0f} s" if rate > 0 else "first unit not done yet"
                retry = f"; {transient} transient failure row(s) so far (rerun with --retry-failed when it ends)" if transient else ""
                kept = f", {self._kept_text()}" if self.target is not None else ""
                log.info("progress %s: %d/%d units%s, ~%.2f rows/s, %s%s", self.label, n, self.total, kept, rate, eta, retry)
                last_log = now
            shown = n
        if bar is not None:
            bar.close()
