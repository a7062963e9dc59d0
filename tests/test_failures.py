"""The one table of failure classes: every reason the code can write has a row, and the
classes are the ones the issue and the providers' documentation call for."""

import re

import pytest

from tests.conftest import ROOT
from corebuild.failures import KINDS, PERMANENT, TRANSIENT, failure_class, kind_of, parse_retry_selection, selected

STAGES = ("street", "aerial", "map", "fetch", "evidence", "describe", "qc", "segment")


def _reasons_in_code() -> set[str]:
    found = set()
    # The first argument of whatever makes a failure: rec.fail(...), StageError(...) and its kinds,
    # the validators that name their reason.
    pattern = re.compile(
        r"""(?:fail|StageError|BadBody|RetryAnswer|json_validator)\(\s*f?["'](?:\{(?:self\.)?stage\}|%s)\.([a-z_]+)["']""" % "|".join(STAGES)
    )
    for path in list((ROOT / "corebuild").rglob("*.py")) + list((ROOT / "pipelines").rglob("*.py")):
        found |= set(pattern.findall(path.read_text()))
    return found


def test_every_reason_the_code_writes_has_a_row():
    kinds = _reasons_in_code()
    assert len(kinds) > 20
    missing = sorted(k for k in kinds if kind_of(f"x.{k}") not in KINDS)
    assert not missing, f"add these kinds to corebuild/failures.py KINDS: {missing}"


@pytest.mark.parametrize(
    "reason, cls",
    [
        ("street.over_query_limit", TRANSIENT), ("street.unknown_error", TRANSIENT), ("street.http_429", TRANSIENT),
        ("aerial.http_503", TRANSIENT), ("map.http_500", TRANSIENT), ("street.timeout", TRANSIENT), ("aerial.unreachable", TRANSIENT),
        ("street.truncated", TRANSIENT), ("describe.http_429", TRANSIENT), ("describe.timeout", TRANSIENT),
        ("fetch.internal_error", TRANSIENT), ("describe.engine_error", TRANSIENT),
        ("street.zero_results", PERMANENT), ("street.not_found", PERMANENT), ("street.duplicate", PERMANENT), ("street.no_imagery", PERMANENT),
        ("aerial.image_too_large", PERMANENT), ("street.http_404", PERMANENT), ("street.http_403", PERMANENT), ("describe.truncated", PERMANENT),
        ("qc.ungrounded_sign_text", PERMANENT), ("describe.prompt_too_long", PERMANENT), ("street.request_denied", PERMANENT),
        ("street.never_heard_of_it", PERMANENT),
    ],
)
def test_classes(reason, cls):
    assert failure_class(reason) == cls


def test_selection():
    assert parse_retry_selection(None) is None and parse_retry_selection("transient") is None
    sel = parse_retry_selection("street.over_query_limit, http_5xx")
    assert selected("street.over_query_limit", sel) and selected("aerial.http_502", sel)
    assert not selected("street.http_429", sel) and not selected(None, sel)
    assert selected("street.zero_results", parse_retry_selection("permanent")) and not selected("street.zero_results", None)
    assert failure_class(None) is None
