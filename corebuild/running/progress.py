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
        log_every_s: float = 30.0, stream=None, attempt: int = 0, retry_units: frozenset[int] = frozenset(),
    ):
        self.storage, self.region_id, self.total, self.unit_points = storage, region_id, total_units, unit_points
        # A retry pass rewrites finished units: each counts once its marker says this attempt.
        self.attempt, self.retry_units = attempt, retry_units
        self._markers: dict[str, tuple[int, int]] = {}  # marker name -> (attempt, transient failure rows)
        self.enabled = enabled and total_units > 0
        # Listing a bucket costs a request per 1,000 names: poll gs:// less often.
        self.poll_s = poll_s if poll_s is not None else (10.0 if "://" in storage.url else 2.0)
        self.log_every_s, self.stream = log_every_s, stream or sys.stderr
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.seen: list[tuple[float, int]] = []  # (monotonic time, units done) at each poll

    def poll(self) -> tuple[int, int]:
        """(units finished, counting each retried unit once rewritten; transient failure rows in
        the finished units). Each marker is read once, a retried unit's until it is rewritten."""
        names = [n for n in self.storage.list(f"{self.region_id}/{DONE_DIR}/") if n.endswith(".json")]

        def awaiting_rewrite(name: str) -> bool:
            return int(name.rsplit("/u", 1)[-1][:-5]) in self.retry_units and self._markers[name][0] < self.attempt

        for n in names:
            if n not in self._markers or awaiting_rewrite(n):
                try:
                    doc = json.loads(self.storage.read(n) or b"{}")
                except ValueError:
                    doc = {}
                self._markers[n] = (int(doc.get("attempt", 0)), int(doc.get("failure_classes", {}).get("transient", 0)))
        return len(names) - sum(map(awaiting_rewrite, names)), sum(t for _, t in self._markers.values())

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

            bar = tqdm(total=self.total, initial=start, unit="unit", desc=self.region_id, file=self.stream, dynamic_ncols=True)
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
                bar.set_postfix_str(f"~{rate:.2f} rows/s" + (f", {transient} transient failures" if transient else ""))
            elif now - last_log >= self.log_every_s:
                eta = f"eta {(self.total - n) * self.unit_points / rate:.0f} s" if rate > 0 else "first unit not done yet"
                retry = f"; {transient} transient failure row(s) so far (rerun with --retry-failed when it ends)" if transient else ""
                log.info("progress %s: %d/%d units, ~%.2f rows/s, %s%s", self.region_id, n, self.total, rate, eta, retry)
                last_log = now
            shown = n
        if bar is not None:
            bar.close()
