"""The `template` describer: sentences from the OCR evidence and colour cues read from the street
pixels, offline and deterministic; it never sees ground truth."""

from __future__ import annotations

from typing import Sequence

from corebuild.errors import ConfigError
from corebuild.record import Description, Record
from corebuild.stages.describe import DescribeConfig, compass
from corebuild.stages.describe.prompts import load_prompt
from corebuild.stages.describe.scene import view_cues


def _side(box, width: int) -> str:
    cx = sum(p[0] for p in box) / len(box)
    return "left" if cx < width / 3 else "right" if cx > 2 * width / 3 else "ahead"


class TemplateDescriber:
    """Writes sentences from OCR text and pixel colour cues; never sees ground truth."""

    name = "template"
    model_id = "template"

    def __init__(self, cfg: DescribeConfig):
        self.prompt = load_prompt(cfg.prompts_dir, cfg.prompt_id)
        if self.prompt.body.get("kind") != "template":
            raise ConfigError(f"prompt set {cfg.prompt_id!r} is not a template prompt (kind={self.prompt.body.get('kind')!r})")

    def _text(self, rec: Record, context: dict) -> str:
        p = self.prompt.body
        sides = p["sides"]
        region = context.get(rec.region_id, {})
        out = [p["intro"].format(region=region.get("name", rec.region_id), country=region.get("country", "?"))]
        any_text = False
        for view in rec.street.views:
            cues = view_cues(view.image)
            parts = []
            for side in ("left", "ahead", "right"):
                colour = getattr(cues, side)
                if colour and colour not in ("grey", "green"):
                    parts.append(p["building"].format(colour=colour, side=sides[side]))
            if cues.ahead is None and cues.pavement > 0.3:
                parts.append(p["open_ahead"])
            if cues.vegetation > 0.04:
                parts.append(p["trees"])
            for t in sorted((t for t in rec.ocr or () if t.heading == view.heading), key=lambda t: sum(x for x, _ in t.box)):
                parts.append(p["sign"].format(text=t.text, side=sides[_side(t.box, view.width)]))
                any_text = True
            out.append(p["view"].format(direction=compass(view.heading), parts=", ".join(parts) or p["nothing"]))
        if not any_text:
            out.append(p["no_text"])
        return " ".join(out)

    def describe(self, records: Sequence[Record], context: dict) -> list[Record]:
        done = []
        for rec in records:
            if rec.failed:
                done.append(rec)
                continue
            if rec.street is None or rec.ocr is None:
                done.append(rec.fail("describe.missing_evidence", "describe needs street views and OCR evidence"))
                continue
            try:
                text = self._text(rec, context)
            except Exception as exc:  # one undecodable view fails this record, not the batch
                done.append(rec.fail("describe.error", f"{type(exc).__name__}: {exc}"))
                continue
            if len(text.split()) < self.prompt.body.get("min_words", 1):
                done.append(rec.fail("describe.too_short", f"description has {len(text.split())} words"))
                continue
            desc = Description(text, self.name, self.model_id, self.prompt.id, self.prompt.hash)
            done.append(rec.with_(description=desc))
        return done
