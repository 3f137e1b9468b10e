"""Valid JSON out of documents holding NaN/Infinity, and parameter counts without building."""

from __future__ import annotations

import json
import math

import pytest

from jobgate.domain import jsontext
from jobgate.domain.models import reserved_path
from jobgate.domain.native import RangeParam, TooManyJobs, combinations


def test_non_finite_numbers_render_as_null_and_nothing_else_changes() -> None:
    doc = {"a": [1.5, math.inf, {"b": -math.inf}], "c": math.nan, "d": "Infinity", "e": 2}
    text = jsontext.dumps(doc, separators=(",", ":"))
    assert json.loads(text) == {"a": [1.5, None, {"b": None}], "c": None, "d": "Infinity", "e": 2}
    assert doc["c"] is not None  # the input is not modified
    clean = {"x": [1, 2.5], "y": {"z": "s"}}
    assert jsontext.finite(clean) is clean  # nothing copied when nothing changes
    assert jsontext.dumps(clean) == json.dumps(clean)


def test_non_finite_names_where() -> None:
    spec = {"resources": {"ram_gb": math.inf}, "x": [0.5, math.nan], "ok": 1.0}
    assert jsontext.non_finite(spec) == ["resources.ram_gb", "x[1]"]
    assert jsontext.non_finite({"a": [1, "nan"]}) == []


@pytest.mark.parametrize(
    ("start", "stop", "step"), [(0, 10, 1), (3, 10, 3), (5, 5, 1), (9, 2, 1), (-7, 8, 4)]
)
def test_range_count_matches_python(start: int, stop: int, step: int) -> None:
    r = RangeParam(start=start, stop=stop, step=step)
    assert r.count() == len(range(start, stop, step))


def test_counts_are_checked_before_building() -> None:
    with pytest.raises(TooManyJobs, match="1000000000000 jobs; the limit is 10"):
        combinations({"i": RangeParam(stop=10**12)}, 10)
    with pytest.raises(TooManyJobs, match="more than 1e"):
        combinations({"i": RangeParam(stop=10**30), "j": RangeParam(stop=10**30)}, 10)
    assert combinations({"i": RangeParam(stop=0), "j": RangeParam(stop=10**30)}, 10) == []
    assert combinations({"i": RangeParam(stop=2), "s": ["a"]}, 10) == [
        {"i": 0, "s": "a"},
        {"i": 1, "s": "a"},
    ]


@pytest.mark.parametrize(
    ("path", "reserved"),
    [
        ("/", True),
        ("//./", True),
        ("/proc", True),
        ("/dev/x", True),
        ("/./sys/y", True),
        ("/data/proc", False),
        ("/procs/x", False),
        ("/tmp/x", False),
        ("proc/x", True),
    ],
)
def test_reserved_paths(path: str, reserved: bool) -> None:
    assert (reserved_path(path) is not None) == reserved
