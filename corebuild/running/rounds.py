"""Top-up rounds: under `--quota-of kept` (the default) a region's quota is a number of kept
samples, not of sampled points.

A round samples a prefix of the region's rank order (`take` points) and runs it as a build: the
work units already finished are skipped, so a later round runs only the points it adds (in new
units, or grown onto the unit the last round ended in), deduplicated against every earlier
round's claims. After a round the build counts what it
holds and either stops or takes a longer prefix, sized from the yield measured so far:

    take' = sampled + ceil((target - expected kept) / yield x margin)

where transient failures (to be retried) count as kept at the measured yield. It stops when the
region holds its target, when its candidate pool runs out, after `--max-rounds`, when what is
missing waits on transient failures (`--retry-failed`), or when nothing at all was kept; each
stop short of the target is recorded with its reason.

Holding more than the target (a round ends on whole units), the sample is trimmed to end at the
target-th kept point: units past it are dropped, the unit it falls in is rewritten without its
later points. A point's outcome depends only on itself and the points before it (a duplicate
loses to the lowest index), so the trimmed build is the same prefix whatever the rounds' sizes:
a killed round resumes to the same rows.

_build.json records the rounds (`rounds`), the points the sample holds now (`extent`) and why the
rounds stopped (`stop`), each written before the step it describes, so a rerun resumes the round
it was in (or finishes a trim) and goes on from there. On Dataflow each round is its own job: a
round's size depends on what the previous one kept, which a Beam pipeline (a graph without
loops) learns only by finishing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from corebuild.running.resume import read_build, update_build
from corebuild.shards.storage import open_parquet
from corebuild.shards.units import SAMPLING_DIR, SHARDS_DIR, BuildState, cut_unit, drop_unit, finished_units, read_markers
from corebuild.stages.sample import SampleConfig, SamplingPlan

if TYPE_CHECKING:
    from corebuild.running.build import Prepared

log = logging.getLogger("corebuild.running.rounds")


@dataclass(frozen=True)
class Tally:
    """What the finished units hold."""

    sampled: int
    kept: int
    transient: int

    @property
    def yield_(self) -> Optional[float]:
        return self.kept / self.sampled if self.sampled else None

    @property
    def settled_yield(self) -> float:
        """Kept share of the points whose outcome is final (transient failures left out)."""
        settled = self.sampled - self.transient
        return self.kept / settled if settled > 0 else 0.0


def tally(markers: Sequence[dict[str, Any]]) -> Tally:
    return Tally(
        sum(len(m["points"]) for m in markers),
        sum(int(m.get("status_counts", {}).get("kept", 0)) for m in markers),
        sum(int(m.get("failure_classes", {}).get("transient", 0)) for m in markers),
    )


def _pct(y: Optional[float]) -> str:
    return "-" if y is None else f"{100 * y:.0f}%"


def stop_reason(cfg: SampleConfig, target: int, t: Tally, exhausted: bool, rounds: int, last_points: int) -> Optional[str]:
    """Why no further round runs while the region holds fewer than `target` kept samples (None:
    run one)."""
    after = f"after {rounds} round{'s' * (rounds != 1)}"
    if exhausted:
        return f"yield {_pct(t.yield_)} and candidates exhausted {after} (the pool held {t.sampled} points; a lower --expected-yield samples a larger one)"
    if t.kept == 0 and t.transient == 0:
        return f"nothing kept of {t.sampled} sampled points {after}"
    expected = t.kept + t.transient * t.settled_yield
    if t.transient and (expected >= target or 2 * t.transient > last_points):
        return f"{t.transient} transient failure(s) {after}: rerun with --retry-failed, which tops the region up again after retrying them"
    if rounds >= cfg.max_rounds:
        return f"yield {_pct(t.yield_)}, stopped {after} (--max-rounds {cfg.max_rounds})"
    return None


def next_take(cfg: SampleConfig, target: int, t: Tally) -> int:
    """The next round's extent: enough points, at the yield measured so far, to reach the target
    (the last unit of a round may end short: the next round grows it)."""
    y = t.settled_yield
    missing = target - t.kept - t.transient * y
    return t.sampled + max(math.ceil(missing / y * cfg.round_margin), 1)


def cut_point(storage, region_id: str, markers: Sequence[dict[str, Any]], target: int) -> int:
    """The trimmed sample's length: one past its target-th kept point (by point index)."""
    seen = 0
    for m in markers:
        k = int(m.get("status_counts", {}).get("kept", 0))
        if target and seen + k >= target:
            idx: list[int] = []
            for s in m["shards"]:
                cols = open_parquet(storage, f"{region_id}/{SHARDS_DIR}/{s['path']}").read(columns=["point_index", "status"], use_threads=False).to_pydict()
                idx += [i for i, st in zip(cols["point_index"], cols["status"]) if st == "kept"]
            return sorted(idx)[target - seen - 1] + 1
        seen += k
    return 0 if target == 0 else seen  # not reached: nothing to trim


def trim(storage, region_id: str, markers: Sequence[dict[str, Any]], keep: int, unit_points: int, writer_factory, attempt: int) -> int:
    """End the sample at `keep` points (the extent is recorded first, so a killed trim is finished
    by the next run); returns the points dropped."""
    doc = update_build(storage, region_id, extent=keep)
    dropped = 0
    for m in markers:
        if int(m["unit"]) * unit_points >= keep:
            dropped += len(m["points"])
            drop_unit(storage, region_id, m)
        elif max(m["points"], default=-1) >= keep:
            dropped += sum(1 for p in m["points"] if p >= keep)
            cut_unit(storage, region_id, m, keep, writer_factory, attempt)
    update_build(storage, region_id, trimmed=int(doc.get("trimmed", 0)) + dropped)
    name = f"{region_id}/{SAMPLING_DIR}/{region_id}.json"
    summary = json.loads(storage.read(name) or b"{}")
    storage.write(name, json.dumps({**summary, "region_id": region_id, "sampled": keep, "shortfall": None, "trimmed_at": keep}).encode())
    return dropped


def run_rounds(prep: "Prepared", run_round: Callable[[BuildState, int], float], writer_factory) -> float:
    """Round after round of `run_round(state, round number)` (the pipeline; returns its seconds)
    until the region's quota is settled; returns the seconds of all rounds."""
    cfg, storage, rid, n = prep.cfg.sample, prep.storage, prep.region.id, prep.state.unit_points
    target = SamplingPlan(prep.region, cfg).wanted
    doc = read_build(storage, rid)
    rounds: list[dict[str, Any]] = list(doc.get("rounds", []))
    take = target if cfg.quota_of == "sampled" or doc.get("extent") is None else int(doc["extent"])
    retry, seconds = prep.state.retry, 0.0
    while True:
        if not rounds or take > rounds[-1]["take"]:  # a rerun at the same (or a trimmed) extent is no new round
            rounds.append({"round": len(rounds) + 1, "take": take, "attempt": prep.state.attempt, "started_utc": datetime.now(timezone.utc).isoformat()})
            if len(rounds) > 1:
                log.info("%s: round %d samples points %d-%d of its rank order", rid, len(rounds), rounds[-2]["take"], take - 1)
        update_build(storage, rid, rounds=rounds, extent=take, stop=None)
        done, grow = finished_units(read_markers(storage, rid), take, n)
        state = dataclasses.replace(prep.state, take=take, done=done, grow=grow, retry=retry)
        seconds += run_round(state, len(rounds))
        retry = frozenset()  # a retry pass is the first round's work only
        markers = read_markers(storage, rid)
        t = tally(markers)
        summary = json.loads(storage.read(f"{rid}/{SAMPLING_DIR}/{rid}.json") or b"{}")
        rounds[-1].update(sampled=t.sampled, kept=t.kept, transient=t.transient)
        update_build(storage, rid, rounds=rounds)
        if cfg.quota_of == "sampled":
            return seconds
        sampled_now = int(summary.get("sampled", take))
        if t.sampled < sampled_now:  # points the round never wrote: finalize names what is missing
            update_build(storage, rid, stop=f"round {len(rounds)} left {sampled_now - t.sampled} point(s) without a row")
            return seconds
        if t.kept >= target:
            keep = cut_point(storage, rid, markers, target)
            if keep < t.sampled:
                dropped = trim(storage, rid, markers, keep, n, writer_factory, prep.state.attempt)
                log.info("%s: %d kept; the sample ends at its %d-th kept point (%d later point(s) dropped)", rid, target, target, dropped)
            return seconds
        first = rounds[-2]["take"] if len(rounds) > 1 else 0
        reason = stop_reason(cfg, target, t, sampled_now < take, len(rounds), t.sampled - min(first, t.sampled))
        if reason is not None:
            update_build(storage, rid, stop=reason)
            log.warning("%s: %d of %d kept: %s", rid, t.kept, target, reason)
            return seconds
        take = next_take(cfg, target, t)
        log.info("%s: %d of %d kept (yield %s): topping up to %d points", rid, t.kept, target, _pct(t.yield_), take)


def quota_summary(cfg: SampleConfig, region_quota: int, target: int, counts: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `quota` block: what the quota counts, and how the region stands."""
    sampled, kept = int(counts["sampled"]), int(counts["kept"])
    held = kept if cfg.quota_of == "kept" else sampled
    missing = max(target - held, 0)
    return {
        "of": cfg.quota_of,
        "quota": region_quota,
        "target": target,
        "kept": kept,
        "sampled": sampled,
        "rounds": len(doc.get("rounds", [])),
        "yield": round(kept / sampled, 4) if sampled else None,
        "expected_yield": cfg.expected_yield if cfg.quota_of == "kept" else None,
        "missing": missing,
        "shortfall": (doc.get("stop") or counts.get("sampling_shortfall") or "unknown") if missing else None,
        "trimmed": int(doc.get("trimmed", 0)),
    }
