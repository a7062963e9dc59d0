"""Records at the pipeline's groupings: Beam's coder for Record (and the dedupe Claim) is
corebuild.record_codec's compact form, registered in Beam's coder registry on import.

The groupings that carry records (the Spread reshuffle, Units) carry a work unit's records -- a
tuple of them, or of dedupe's verdicts -- as that coder's bytes deflated (`grouping_packer`),
packed just before and unpacked just after, not as Records: the DirectRunner keeps every grouped
value *decoded* in its launcher until the stage after it runs (~1.4 kB a located point as a
Python object, ~190 bytes as these bytes, about half that deflated within its unit). Whatever
coder the registry holds for Record at pipeline construction is the one the groupings pack with
(`grouping_coder`).
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import apache_beam as beam

from corebuild import record_codec
from corebuild.record import Record
from corebuild.stages.dedupe import Claim, Duplicate


class RecordCoder(beam.coders.Coder):
    """A Record, Claim, Duplicate or a tuple of them <-> record_codec bytes: the same value gives
    the same bytes."""

    def encode(self, value) -> bytes:
        return record_codec.encode(value)

    def decode(self, encoded: bytes):
        return record_codec.decode(encoded)

    def is_deterministic(self) -> bool:
        return True  # fields written in a fixed order; no sets or dicts in a record

    def to_type_hint(self):
        return Record


beam.coders.registry.register_coder(Record, RecordCoder)
beam.coders.registry.register_coder(Claim, RecordCoder)
beam.coders.registry.register_coder(Duplicate, RecordCoder)


def grouping_coder() -> beam.coders.Coder:
    """The coder Beam's registry holds for Record: what the groupings pack records with."""
    return beam.coders.registry.get_coder(Record)


def grouping_packer() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    """(pack, unpack) of what crosses the groupings: the registered coder's bytes, deflated at
    zlib level 1. A unit's records repeat most of their text (provider, date, copyright, the
    region's coordinates' leading digits), and the DirectRunner copies what it groups several
    times on the way to a worker (its grouping table, the partition it sends, one data-plane
    message, gRPC's own copy), so every copy shrinks with it."""
    coder = grouping_coder()

    def pack(value: Any) -> bytes:
        return zlib.compress(coder.encode(value), 1)

    def unpack(data: bytes) -> Any:
        return coder.decode(zlib.decompress(data))

    return pack, unpack
