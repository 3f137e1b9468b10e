"""Request bodies: read under a size cap, decoded from JSON or YAML into plain, safe data.

Every route that takes a body reads it here, after authentication (a malformed body
without credentials is a 401). The contract of :func:`parse_body`:

- the body is at most ``JOBGATE_MAX_BODY_BYTES`` (YAML: ``JOBGATE_MAX_YAML_BODY_BYTES``);
  a declared ``Content-Length`` over it is refused before reading, a chunked body as soon
  as it passes it (413, ``errors[0].where`` = ``body``);
- the result holds only objects with string keys, arrays, strings, finite numbers,
  booleans and null: no NaN/Infinity/out-of-range numbers, no lone surrogates, no NUL
  characters, nesting at most :data:`limits.MAX_DEPTH` deep, at most
  :data:`limits.MAX_CONTAINERS` objects and arrays and :data:`limits.MAX_VALUES` values;
- YAML is parsed without anchors or aliases (no expansion bombs), without tags beyond
  strings, numbers, booleans, null, sequences and mappings (``!!binary``,
  ``!!timestamp``, ``!!set``… are refused; an unquoted date stays a string), and with at
  most :data:`limits.MAX_YAML_NODES` nodes.

Anything else is a 400 whose ``errors[].where`` names the place (``body.tags.x``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

import anyio.to_thread
import yaml
from fastapi import Request
from pydantic import BaseModel, ValidationError

from jobgate.config import Settings
from jobgate.domain import limits
from jobgate.errors import InvalidRequest, PayloadTooLarge
from jobgate.service.native import validation_errors

M = TypeVar("M", bound=BaseModel)
YAML_TYPES = frozenset(("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"))
_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON string literal: removed before counting brackets, so those inside strings do not count.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
THREAD_BYTES = 256 * 1024
"""Bodies from this size on are decoded in a worker thread."""
_YAML_KINDS: dict[type, str] = {bytes: "!!binary", set: "!!set", tuple: "!!omap/!!pairs"}


def _invalid(where: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {what}", errors=[{"where": where, "what": what}])


def is_yaml(request: Request) -> bool:
    ctype = request.headers.get("content-type", "application/json")
    return ctype.split(";")[0].strip().lower() in YAML_TYPES


async def read_body(request: Request) -> bytes:
    """The raw body, read at most once per request and never beyond its size limit."""
    cached: bytes | None = getattr(request.state, "raw_body", None)
    if cached is not None:
        return cached
    settings: Settings = request.app.state.services.settings
    kind, limit = "JSON", settings.max_body_bytes
    if is_yaml(request):
        kind, limit = "YAML", settings.max_yaml_body_bytes
    too_large = PayloadTooLarge(
        f"the request body is larger than the {limit}-byte limit for {kind} bodies",
        errors=[{"where": "body", "what": f"at most {limit} bytes"}],
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    request.state.raw_body = raw
    return raw


async def parse_body(request: Request) -> Any:
    """The request body as checked plain data (see the module docstring); 400/413 otherwise."""
    raw = await read_body(request)
    decode = load_yaml if is_yaml(request) else load_json
    if len(raw) < THREAD_BYTES:
        return decode(raw)
    # A large body takes a while (YAML is pure Python, the checks too): off the event loop.
    return await anyio.to_thread.run_sync(decode, raw)


def validate(cls: type[M], data: Any, where: str = "body") -> M:
    """``data`` as a ``cls``; a 400 listing each problem under ``where`` otherwise."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = validation_errors(exc, where)
        raise InvalidRequest(
            "; ".join(f"{e['where']}: {e['what']}" for e in errors[:5]), errors=errors
        ) from exc


def body_of(cls: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency giving the body as a ``cls`` (read and checked by :func:`parse_body`)."""

    async def dependency(request: Request) -> M:
        return validate(cls, await parse_body(request))

    return dependency


# -- JSON ----------------------------------------------------------------------------


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows (only finite numbers are accepted)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range (only finite numbers)")
    return value


def load_json(raw: bytes) -> Any:
    """Decode and check (:func:`check_data`) JSON: no NaN, Infinity or overflowing numbers,
    not too deep or big."""
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > limits.MAX_CONTAINERS or containers + raw.count(b",") > limits.MAX_VALUES:
        # Only brackets and commas outside strings count (a CSV in a string has many).
        bare = _JSON_STRING.sub(b'""', raw)
        containers = bare.count(b"{") + bare.count(b"[")
        if containers > limits.MAX_CONTAINERS:
            raise _invalid("body", f"more than {limits.MAX_CONTAINERS} objects and arrays")
        if containers + bare.count(b",") > limits.MAX_VALUES:
            raise _invalid("body", f"more than {limits.MAX_VALUES} values")
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except _Refused as exc:
        raise _invalid("body", str(exc)) from exc
    except RecursionError as exc:
        raise _invalid("body", f"nested deeper than {limits.MAX_DEPTH} levels") from exc
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, integers of >4300 digits
        raise InvalidRequest(
            "the body is not valid JSON", errors=[{"where": "body", "what": str(exc)[:500]}]
        ) from exc
    check_data(data)
    return data


# -- YAML ----------------------------------------------------------------------------


class BodyLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases, with depth and node caps, and dates as strings."""

    yaml_implicit_resolvers = {  # noqa: RUF012 (the resolver's own, per-class table)
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML anchors (&name) and aliases (*name) are not accepted",
                event.start_mark,
            )
        self.nodes += 1
        if self.nodes > limits.MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {limits.MAX_YAML_NODES} YAML nodes", event.start_mark
            )
        self.depth += 1
        try:
            if self.depth > limits.MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {limits.MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml(raw: bytes) -> Any:
    """Decode and check (:func:`check_data`) YAML with :class:`BodyLoader`."""
    loader: BodyLoader | None = None
    try:
        loader = BodyLoader(raw)  # the reader checks the characters here already
        data = loader.get_single_data()
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise InvalidRequest(
            "the body is not acceptable YAML", errors=[{"where": "body", "what": str(exc)[:500]}]
        ) from exc
    finally:
        if loader is not None:
            loader.dispose()
    check_data(data)
    return data


# -- the checks both share ------------------------------------------------------------

Path = tuple[Any, ...]


def _render(path: Path) -> str:
    parts: list[Any] = []
    while path:
        path, part = path
        parts.append(part)
    out = "body"
    for part in reversed(parts):
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _bad_string(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain a NUL character (U+0000)"
    if not value.isascii() and _SURROGATE.search(value):
        return "must not contain a lone surrogate (\\ud800-\\udfff): not valid Unicode"
    return None


def _check_scalar(value: Any, path: Path) -> None:
    if isinstance(value, str):
        problem = _bad_string(value)
        if problem:
            raise _invalid(_render(path), problem)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(_render(path), "must be a finite number")
    elif not (isinstance(value, int) or value is None):  # bool is an int
        kind = _YAML_KINDS.get(
            type(value), "!!timestamp" if "date" in type(value).__name__ else type(value).__name__
        )
        raise _invalid(_render(path), f"a {kind} value is not accepted; use a string")


def check_data(data: Any) -> None:
    """Refuse what no field accepts, wherever it is (iterative: no depth limit of its own)."""
    if not isinstance(data, dict | list):
        _check_scalar(data, ())
        return
    stack: list[tuple[Any, Path, int]] = [(data, (), 0)]
    containers = 0
    values = 0
    while stack:
        value, path, depth = stack.pop()
        containers += 1
        values += len(value)
        if depth >= limits.MAX_DEPTH:
            raise _invalid(_render(path), f"nested deeper than {limits.MAX_DEPTH} levels")
        if containers > limits.MAX_CONTAINERS:
            raise _invalid("body", f"more than {limits.MAX_CONTAINERS} objects and arrays")
        if values > limits.MAX_VALUES:
            raise _invalid("body", f"more than {limits.MAX_VALUES} values")
        items = enumerate(value) if isinstance(value, list) else value.items()
        for key, item in items:
            if isinstance(key, str):
                problem = _bad_string(key)
                if problem:
                    raise _invalid(_render(path), f"a key {problem}")
            elif isinstance(value, dict):
                raise _invalid(_render(path), f"keys must be strings, not {key!r:.40}")
            if isinstance(item, dict | list):
                stack.append((item, (path, key), depth + 1))
            elif not (item is None or type(item) is int or type(item) is bool):
                _check_scalar(item, (path, key))


async def check_url(request: Request) -> None:
    """Refuse a path or query string that is not UTF-8 (it would silently become U+FFFD)
    or that holds a NUL character (as in bodies: PostgreSQL cannot store one)."""
    raw_path = request.scope.get("raw_path") or b""
    query = request.scope.get("query_string") or b""
    for where, part in (("path", raw_path), ("query", query)):
        raw = unquote_to_bytes(part.replace(b"+", b" "))
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _invalid(where, "percent-encoded bytes that are not UTF-8") from exc
        if b"\x00" in raw:
            raise _invalid(where, "must not contain a NUL character (%00)")
