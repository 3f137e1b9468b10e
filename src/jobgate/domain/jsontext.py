"""JSON text that is always valid JSON, whatever numbers a stored document holds.

Python's ``json`` reads and writes ``NaN``, ``Infinity`` and ``-Infinity`` (and reads
``1e309`` as infinity), none of which is JSON. A document stored before such numbers were
refused at the API, or by another version, may hold them; rendering it must still give
clients parseable JSON. Such a number is rendered as ``null``: JSON has no value for it,
and null is what a client reading "no usable value" already handles.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by ``None``.

    Containers are copied only when something inside them changes.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        items = {k: finite(v) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if isinstance(value, list | tuple):
        out = [finite(v) for v in value]
        return value if all(a is b for a, b in zip(out, value, strict=True)) else out
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, **kwargs)``, non-finite numbers rendered as ``null``.

    The common case costs one plain ``dumps``: the document is walked only when that
    refuses a non-finite number.
    """
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(finite(value), allow_nan=False, **kwargs)


def non_finite(value: Any, where: str = "") -> list[str]:
    """Where ``value`` holds non-finite numbers, as dotted paths (``resources.ram_gb``)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where or "."]
    if isinstance(value, dict):
        return [
            p for k, v in value.items() for p in non_finite(v, f"{where}.{k}" if where else str(k))
        ]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in non_finite(v, f"{where}[{i}]")]
    return []
