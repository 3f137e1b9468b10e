"""Fuzzing the request parsers and models: any input either parses or is a clear 400.

Hypothesis feeds arbitrary JSON-like values, near-valid documents (a valid one with one
part replaced, removed or added) and arbitrary JSON/YAML text to what turns a request
body into a request: ``parse_body`` (JSON and YAML), the TES task, the native
JobRequest/ParametricRequest (with its expansion), SearchRequest/SummaryRequest and the
SRCNet workstep (with its translation into a job). Each must succeed or raise the
project's InvalidRequest (pydantic's ValidationError for models FastAPI validates, which
the app answers as 400); anything else would be a 500. Accepted requests must also give
a stored spec that is strict JSON. Deterministic (derandomized) and bounded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from jobgate.api.bodies import YAML_TYPES, load_json, load_yaml
from jobgate.api.bodies import validate as _model
from jobgate.api.worksteps import _parse as parse_workstep
from jobgate.api.worksteps import to_job
from jobgate.domain.models import TaskSpec
from jobgate.domain.native import JobRequest, ParametricRequest, combinations, substitute
from jobgate.domain.query import SearchRequest, SummaryRequest
from jobgate.errors import InvalidRequest

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "/", "/tmp/x", "..", "*", "{{ i }}", "docker://", "\x00", "eq"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)

EXECUTOR = {"image": "alpine", "command": ["echo", "hi"], "workdir": "/work", "env": {"A": "b"}}
TASK = {
    "name": "t",
    "inputs": [{"path": "/in/a", "content": "x"}, {"path": "/in/b", "url": "http://h/b"}],
    "outputs": [{"path": "/out/*", "path_prefix": "/out/", "url": "file:///tmp/o"}],
    "resources": {"cpu_cores": 1, "ram_gb": 1.5, "backend_parameters": {"k": "v"}},
    "executors": [EXECUTOR],
    "volumes": ["/vol"],
    "tags": {"k": "v"},
}
JOB = {
    "name": "j",
    "script": "echo {{ i }}",
    "image": "alpine",
    "priority": 5,
    "labels": {"team": "a"},
    "callback": "http://example.org/hook",
    "hold": True,
    "output_sandbox": ["/out/*"],
    "resources": {"cpu_cores": 2},
}
PARAMETRIC = {"job": JOB, "parameters": {"i": [1, 2], "r": {"start": 0, "stop": 3, "step": 1}}}
SEARCH = {
    "filters": [{"field": "state", "op": "in", "value": ["QUEUED"]}, {"field": "labels.team"}],
    "sort": [{"field": "created_at", "direction": "asc"}],
    "fields": ["id", "labels"],
    "limit": 10,
    "cursor": "abc",
}
SUMMARY = {"group_by": ["state", "labels.team"], "filters": [{"field": "owner", "value": "x"}]}
WORKSTEP = {
    "container_image": "docker://alpine",
    "executable_entrypoint": "echo hi",
    "execution": "batch",
    "system_parameters": {"src_node": "a", "cpu_cores": 2, "memory_gb": 1.0, "x": 1},
    "workflow_id": "w",
    "input_data": [{"a": 1}],
    "provenance_json": {"p": 1},
}


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``doc`` (the document itself included)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any, action: str) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy: Any = dict(doc) if isinstance(doc, dict) else list(doc)
    if not rest and action == "delete":
        del copy[head]
    elif not rest and action == "add" and isinstance(copy, dict):
        copy[f"extra{len(copy)}"] = value
    else:
        copy[head] = replaced(copy[head], rest, value, action)
    return copy


def near(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``valid`` with one part replaced by any value, deleted, or a key added beside it."""
    return st.builds(
        replaced,
        st.just(valid),
        st.sampled_from(paths(valid)),
        json_values,
        st.sampled_from(["replace", "delete", "add"]),
    ).filter(lambda doc: doc is not None or True)


def documents(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    return (
        near(valid)
        | json_values
        | st.builds(
            lambda d, v: {**valid, **d},
            st.dictionaries(st.sampled_from(sorted(valid)), json_values, max_size=3),
            st.just(None),
        )
    )


def strict_json(value: Any) -> None:
    """What is stored must be JSON a strict client can read back."""
    json.dumps(value, allow_nan=False)


def checked(cls: type[BaseModel], data: Any) -> Any:
    """``_model``: the model, or InvalidRequest (400) saying where; nothing else."""
    try:
        return _model(cls, data)
    except InvalidRequest as exc:
        assert exc.errors and all(e["where"].startswith("body") for e in exc.errors)
        json.dumps(exc.to_json())
        return None


@FUZZ
@given(documents(TASK))
def test_tes_task_model(data: Any) -> None:
    try:
        task = TaskSpec.model_validate(data)
    except ValidationError:
        return
    strict_json(task.model_dump(mode="json", exclude_none=True))


@FUZZ
@given(documents(JOB) | near({**JOB, "script": None, "executors": [EXECUTOR]}))
def test_native_job_request(data: Any) -> None:
    req = checked(JobRequest, data)
    if req is not None:
        strict_json(req.task_spec())


big_ints = st.integers() | st.integers(min_value=-(2**100), max_value=2**100)
ranges = st.fixed_dictionaries(
    {"stop": big_ints}, optional={"start": big_ints, "step": big_ints | json_values}
)
parameters = st.dictionaries(
    st.sampled_from(["i", "j", "k", "1x", ""]), ranges | st.lists(scalars, max_size=5), max_size=4
)
parametric = documents(PARAMETRIC) | st.fixed_dictionaries(
    {"job": near(JOB), "parameters": parameters}
)


@FUZZ
@given(parametric)
def test_parametric_request_and_its_expansion(data: Any) -> None:
    req = checked(ParametricRequest, data)
    if req is None:
        return
    try:
        combos = combinations(req.parameters, cap=50)
    except ValueError:  # TooManyJobs: the service answers it as a 400
        return
    for values in combos:
        item = substitute(req.job, values)
        job = checked(JobRequest, item)
        if job is not None:
            strict_json(job.task_spec())


@FUZZ
@given(documents(SEARCH))
def test_search_request(data: Any) -> None:
    checked(SearchRequest, data)


@FUZZ
@given(documents(SUMMARY))
def test_summary_request(data: Any) -> None:
    checked(SummaryRequest, data)


@FUZZ
@given(documents(WORKSTEP))
def test_workstep_request_and_its_job(data: Any) -> None:
    try:
        ws = parse_workstep(data)
    except InvalidRequest as exc:
        json.dumps(exc.to_json())
        return
    try:
        job = to_job(ws, "local")
    except InvalidRequest:
        return
    strict_json(job.task_spec())


def request(raw: bytes, content_type: str) -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/jobs",
        "headers": [(b"content-type", content_type.encode())],
        "query_string": b"",
    }
    return Request(scope, receive)


def parsed(raw: bytes, content_type: str) -> tuple[bool, Any]:
    """(True, data) or (False, None) for a 400; anything else propagates."""
    try:
        decode = load_yaml if content_type.split(";")[0] in YAML_TYPES else load_json
        return True, decode(raw)
    except InvalidRequest as exc:
        assert exc.errors and exc.errors[0]["where"].startswith("body")
        json.dumps(exc.to_json())
        return False, None


YAML_BITS = [
    "a: 1\n",
    "- x\n",
    "&a [*a]\n",
    "!!python/object:os.system ls\n",
    "? [1]\n: 2\n",
    "{",
    "'",
    '"\\x"',
    "%YAML 1.1\n---\n",
    "2001-02-30\n",
    "1e309\n",
    ".nan\n",
    "<<: {a: 1}\n",
    "  - - -\n",
    "key: |\n  text\n",
    "\t",
    "~\n",
    "!!binary AAA=\n",
    "0x1F\n",
    "---\n...\n",
]
yaml_text = (
    st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=10), max_size=8).map("".join)
    | json_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True))
    | st.builds(
        lambda d, cut: yaml.safe_dump(d)[:cut], near(JOB), st.integers(min_value=0, max_value=80)
    )
)
json_text = (
    json_values.map(json.dumps)
    | near(JOB).map(json.dumps)
    | st.builds(lambda d, cut: json.dumps(d)[:cut], near(JOB), st.integers(0, 80))
    | st.lists(
        st.sampled_from(['{"a":', "[", "1e999", "NaN", '"\\ud800"', "]", "}", ","]), max_size=8
    ).map("".join)
    | st.text(max_size=20)
)


@FUZZ
@given(yaml_text, st.sampled_from(["application/yaml", "application/x-yaml", "text/yaml"]))
def test_yaml_bodies(text: str, content_type: str) -> None:
    ok, data = parsed(text.encode("utf-8", "surrogatepass"), content_type)
    if ok:
        req = checked(JobRequest, data)
        if req is not None:
            strict_json(req.task_spec())


@FUZZ
@given(json_text | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_json_bodies(text: str) -> None:
    ok, data = parsed(text.encode("utf-8", "surrogatepass"), "application/json")
    if ok:
        req = checked(JobRequest, data)
        if req is not None:
            strict_json(req.task_spec())


@pytest.mark.parametrize(
    "body",
    [b"a: &a [*a, *a]\n", b'{"script": "x", "resources": {"ram_gb": 1e999}}'],
    ids=["yaml-alias-cycle", "non-finite-number"],
)
def test_known_awkward_bodies(body: bytes) -> None:
    ok, data = parsed(body, "application/yaml" if body.startswith(b"a:") else "application/json")
    if ok:
        req = checked(JobRequest, data)
        if req is not None:
            strict_json(req.task_spec())
