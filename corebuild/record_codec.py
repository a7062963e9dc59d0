"""A compact byte form of a Record (a dedupe Claim or Duplicate, or a tuple of them: a work
unit's records) for the pipeline's groupings.

Beam's default for a Record is a pickle (~700 bytes a located point, ~1.4 kB again once the
DirectRunner decodes it into its grouping tables); this writes only the fields that differ from
their defaults, tagged, with strings repeated inside one value (a pano id that is also its
dedupe key, the region id of every record in a unit) written once. A located point is ~190 bytes. Exact round trip: every
field comes back with its value and type (an unknown type -- a numpy scalar, a list -- is
pickled in place). The form lives only inside one run of the pipeline (launcher and workers run
the same code), never on disk, so it carries no version.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import struct
from typing import Any

from corebuild.record import AerialCrop, Description, OcrText, Record, Segment, StreetCapture, StreetLocation, StreetView, make_sample_id
from corebuild.stages.dedupe import Claim, Duplicate

# The classes a record holds, by position: the index is what is written (append only within a run).
CLASSES: tuple[type, ...] = (Record, StreetLocation, StreetCapture, StreetView, AerialCrop, OcrText, Segment, Description, Claim, Duplicate)
_INDEX = {cls: i for i, cls in enumerate(CLASSES)}
_FIELDS = {cls: tuple(dataclasses.fields(cls)) for cls in CLASSES}

(NONE, FALSE, TRUE, INT, FLOAT, WHOLE_FLOAT, STR, STR_AGAIN, BYTES, TUPLE, DATACLASS, PICKLED, DERIVED_SAMPLE_ID) = range(13)
_DOUBLE = struct.Struct("<d")


def _is_default(value: Any, f: dataclasses.Field) -> bool:
    """The field holds its default exactly (same type too), so it need not be written."""
    if f.default is not dataclasses.MISSING:
        d = f.default
    elif f.default_factory is not dataclasses.MISSING:
        d = f.default_factory()
    else:
        return False  # required: always written
    if value is d:
        return True
    return type(value) is type(d) and type(d) in (str, bytes, int, bool, tuple) and value == d


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.strings: dict[str, int] = {}

    def varint(self, n: int) -> None:
        while n >= 0x80:
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7
        self.out.append(n)

    def value(self, v: Any) -> None:
        t = type(v)
        if v is None:
            self.out.append(NONE)
        elif t is bool:
            self.out.append(TRUE if v else FALSE)
        elif t is int:
            self.out.append(INT)
            self._int(v)
        elif t is float:
            if math.isfinite(v) and v == int(v) and abs(v) < 1 << 53 and math.copysign(1.0, v) > 0:
                self.out.append(WHOLE_FLOAT)  # headings, fov, pitch: a byte or two, not eight
                self.varint(int(v))
            else:
                self.out.append(FLOAT)
                self.out += _DOUBLE.pack(v)
        elif t is str:
            seen = self.strings.get(v)
            if seen is not None:
                self.out.append(STR_AGAIN)
                self.varint(seen)
            else:
                self.strings[v] = len(self.strings)
                raw = v.encode("utf-8", "surrogatepass")
                self.out.append(STR)
                self.varint(len(raw))
                self.out += raw
        elif t is bytes:
            self.out.append(BYTES)
            self.varint(len(v))
            self.out += v
        elif t is tuple:
            self.out.append(TUPLE)
            self.varint(len(v))
            for item in v:
                self.value(item)
        elif t in _INDEX:
            self.dataclass(v)
        else:  # anything else (numpy scalars, lists, subclasses): pickled, so it comes back as it was
            raw = pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
            self.out.append(PICKLED)
            self.varint(len(raw))
            self.out += raw

    def _int(self, v: int) -> None:
        # zigzag over Python's unbounded ints: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
        self.varint(v << 1 if v >= 0 else ((-v) << 1) - 1)

    def dataclass(self, obj: Any) -> None:
        cls = type(obj)
        fields = _FIELDS[cls]
        values = [getattr(obj, f.name) for f in fields]
        present = 0
        for i, (f, v) in enumerate(zip(fields, values)):
            if not _is_default(v, f):
                present |= 1 << i
        self.out.append(DATACLASS)
        self.varint(_INDEX[cls])
        self.varint(present)
        derived = cls is Record and obj.sample_id == make_sample_id(obj.region_id, obj.seed, obj.point_index) and type(obj.sample_id) is str
        for i, (f, v) in enumerate(zip(fields, values)):
            if present >> i & 1:
                if derived and f.name == "sample_id":
                    self.out.append(DERIVED_SAMPLE_ID)  # rebuilt from region, seed and index
                else:
                    self.value(v)


def encode(obj: Any) -> bytes:
    w = _Writer()
    w.value(obj)
    return bytes(w.out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0
        self.strings: list[str] = []

    def varint(self) -> int:
        n = shift = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7

    def take(self, n: int) -> bytes:
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return raw

    def value(self) -> Any:
        tag = self.data[self.pos]
        self.pos += 1
        if tag == NONE:
            return None
        if tag == FALSE:
            return False
        if tag == TRUE:
            return True
        if tag == INT:
            z = self.varint()
            return z >> 1 if not z & 1 else -((z + 1) >> 1)
        if tag == FLOAT:
            (v,) = _DOUBLE.unpack_from(self.data, self.pos)
            self.pos += 8
            return v
        if tag == WHOLE_FLOAT:
            return float(self.varint())
        if tag == STR:
            s = self.take(self.varint()).decode("utf-8", "surrogatepass")
            self.strings.append(s)
            return s
        if tag == STR_AGAIN:
            return self.strings[self.varint()]
        if tag == BYTES:
            return self.take(self.varint())
        if tag == TUPLE:
            return tuple(self.value() for _ in range(self.varint()))
        if tag == DATACLASS:
            return self.dataclass()
        if tag == PICKLED:
            return pickle.loads(self.take(self.varint()))
        if tag == DERIVED_SAMPLE_ID:
            return _DERIVED
        raise ValueError(f"record_codec: unknown tag {tag} at byte {self.pos - 1}")

    def dataclass(self) -> Any:
        cls = CLASSES[self.varint()]
        present = self.varint()
        kw = {}
        for i, f in enumerate(_FIELDS[cls]):
            if present >> i & 1:
                kw[f.name] = self.value()
        if kw.get("sample_id") is _DERIVED:
            kw["sample_id"] = make_sample_id(kw["region_id"], kw["seed"], kw["point_index"])
        return cls(**kw)  # absent fields take their defaults


_DERIVED = object()


def decode(data: bytes) -> Any:
    r = _Reader(data)
    out = r.value()
    if r.pos != len(r.data):
        raise ValueError(f"record_codec: {len(r.data) - r.pos} trailing byte(s)")
    return out
