"""JDL (ClassAd) job descriptions as DIRAC and DiracX users write them, and their
parametric expansion.

The grammar read here is the part of ClassAd syntax JDLs use::

    [                                  // optional enclosing brackets
      Executable = "my.sh";            // a string: "…" with \\" \\\\ \\n escapes
      Arguments  = "-n 5";
      CPUTime    = 3600;               // an integer or a real (1e3, -2.5)
      Tags       = {"a", "b"};         // a list of values
      JobGroup   = mygroup;            // a bare word is taken as a string
      Flag       = true;               // true/false are booleans
    ]

Comments are ``// …``, ``# …`` and ``/* … */``. Attribute names are case-insensitive
(kept as first written; a second definition of the same name is an error). Every error
is a :class:`JdlError` naming the attribute (when there is one) and the line.

Parametric jobs (:func:`expand`): ``Parameters`` is either a list of values, or a count
``N`` with ``ParameterStart`` (default 0), ``ParameterStep`` (default 0) and
``ParameterFactor`` (default 1) making value ``i+1 = value i * factor + step``. Each job
gets ``%s`` replaced by its parameter value and ``%n`` by its index in every string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Value = str | int | float | bool | list[Any]

PARAMETER_KEYS = ("Parameters", "ParameterStart", "ParameterStep", "ParameterFactor")
_PARAM_LOWER = {k.lower() for k in PARAMETER_KEYS}


class JdlError(ValueError):
    """A JDL that cannot be read or expanded; ``attribute`` and ``line`` say where."""

    def __init__(self, what: str, *, line: int | None = None, attribute: str | None = None):
        self.what = what
        self.line = line
        self.attribute = attribute
        where = []
        if attribute is not None:
            where.append(f"attribute {attribute}")
        if line is not None:
            where.append(f"line {line}")
        super().__init__(f"{', '.join(where)}: {what}" if where else what)


@dataclass(slots=True)
class Jdl:
    """The attributes of one JDL, in order, with the line each was defined on."""

    attributes: dict[str, Value] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def _key(self, name: str) -> str | None:
        lower = name.lower()
        return next((k for k in self.attributes if k.lower() == lower), None)

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name`` (case-insensitive), or ``default``."""
        key = self._key(name)
        return default if key is None else self.attributes[key]

    def line_of(self, name: str) -> int | None:
        key = self._key(name)
        return None if key is None else self.lines[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) is not None


_TOKEN = re.compile(
    r"""
      (?P<ws>[ \t\r\f\v]+)
    | (?P<nl>\n)
    | (?P<comment>//[^\n]*|\#[^\n]*)
    | (?P<block>/\*)
    | (?P<string>")
    | (?P<number>[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![A-Za-z_]))
    | (?P<word>[A-Za-z_][A-Za-z0-9_.\-:/@$]*)
    | (?P<punct>[\[\]{}=;,])
    """,
    re.VERBOSE,
)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/"}


@dataclass(slots=True)
class _Tok:
    kind: str
    value: Any
    line: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise JdlError(f"unexpected character {text[pos]!r}", line=line)
        kind = m.lastgroup
        assert kind is not None
        if kind == "nl":
            line += 1
            pos = m.end()
        elif kind in ("ws", "comment"):
            pos = m.end()
        elif kind == "block":
            end = text.find("*/", m.end())
            if end < 0:
                raise JdlError("unterminated /* comment", line=line)
            line += text.count("\n", pos, end)
            pos = end + 2
        elif kind == "string":
            value, pos, lines = _string(text, m.end(), line)
            out.append(_Tok("string", value, line))
            line += lines
        elif kind == "number":
            raw = m.group()
            number: int | float = float(raw) if any(c in raw for c in ".eE") else int(raw)
            out.append(_Tok("number", number, line))
            pos = m.end()
        else:
            out.append(_Tok(kind, m.group(), line))
            pos = m.end()
    out.append(_Tok("end", None, line))
    return out


def _string(text: str, pos: int, line: int) -> tuple[str, int, int]:
    """The string starting after the opening quote at ``pos``: (value, end, newlines)."""
    chars: list[str] = []
    lines = 0
    while pos < len(text):
        c = text[pos]
        if c == '"':
            return "".join(chars), pos + 1, lines
        if c == "\\":
            if pos + 1 >= len(text):
                break
            nxt = text[pos + 1]
            chars.append(_ESCAPES.get(nxt, "\\" + nxt))
            pos += 2
            continue
        if c == "\n":
            lines += 1
        chars.append(c)
        pos += 1
    raise JdlError("unterminated string", line=line)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, value: str, attribute: str | None) -> _Tok:
        tok = self.take()
        if tok.kind != "punct" or tok.value != value:
            found = "the end of the text" if tok.kind == "end" else repr(tok.value)
            raise JdlError(f"expected {value!r}, found {found}", line=tok.line, attribute=attribute)
        return tok

    def parse(self) -> Jdl:
        jdl = Jdl()
        bracketed = self.peek().kind == "punct" and self.peek().value == "["
        if bracketed:
            self.take()
        while True:
            tok = self.peek()
            if tok.kind == "end":
                if bracketed:
                    raise JdlError("missing the closing ']'", line=tok.line)
                break
            if bracketed and tok.kind == "punct" and tok.value == "]":
                self.take()
                rest = self.peek()
                if rest.kind != "end":
                    raise JdlError(f"unexpected {rest.value!r} after ']'", line=rest.line)
                break
            if tok.kind == "punct" and tok.value == ";":
                self.take()  # a stray separator
                continue
            self.attribute(jdl)
        if not jdl.attributes:
            raise JdlError("the JDL defines no attribute", line=1)
        return jdl

    def attribute(self, jdl: Jdl) -> None:
        tok = self.take()
        if tok.kind != "word":
            found = "the end of the text" if tok.kind == "end" else repr(tok.value)
            raise JdlError(f"expected an attribute name, found {found}", line=tok.line)
        name = tok.value
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise JdlError("not a valid attribute name", line=tok.line, attribute=name)
        if name in jdl:
            raise JdlError(
                f"defined twice (first on line {jdl.line_of(name)})", line=tok.line, attribute=name
            )
        self.expect("=", name)
        value = self.value(name)
        end = self.peek()
        if end.kind == "punct" and end.value == ";":
            self.take()
        elif not (end.kind == "end" or (end.kind == "punct" and end.value == "]")):
            raise JdlError(
                f"expected ';' after the value, found {end.value!r}", line=end.line, attribute=name
            )
        jdl.attributes[name] = value
        jdl.lines[name] = tok.line

    def value(self, name: str) -> Value:
        tok = self.take()
        if tok.kind in ("string", "number"):
            value: Value = tok.value
            return value
        if tok.kind == "word":
            word: str = tok.value
            if word.lower() in ("true", "false"):
                return word.lower() == "true"
            return word
        if tok.kind == "punct" and tok.value == "{":
            items: list[Any] = []
            if self.peek().kind == "punct" and self.peek().value == "}":
                self.take()
                return items
            while True:
                item = self.value(name)
                if isinstance(item, list):
                    raise JdlError("lists cannot be nested", line=tok.line, attribute=name)
                items.append(item)
                sep = self.take()
                if sep.kind == "punct" and sep.value == "}":
                    return items
                if not (sep.kind == "punct" and sep.value == ","):
                    found = "the end of the text" if sep.kind == "end" else repr(sep.value)
                    raise JdlError(
                        f"expected ',' or '}}' in the list, found {found}",
                        line=sep.line,
                        attribute=name,
                    )
        found = "nothing" if tok.kind == "end" else repr(tok.value)
        raise JdlError(f"expected a value, found {found}", line=tok.line, attribute=name)


def parse(text: str) -> Jdl:
    """Parse one JDL; :class:`JdlError` names the attribute and line of the first problem."""
    return _Parser(text).parse()


# -- parametric jobs ---------------------------------------------------------------------


def _number(jdl: Jdl, name: str, default: float) -> float:
    value = jdl.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JdlError("must be a number", line=jdl.line_of(name), attribute=name)
    return value


def parameter_values(jdl: Jdl, cap: int) -> list[Value] | None:
    """The parameter values of a parametric JDL (None: not parametric).

    Raises :class:`JdlError` when malformed or when there would be more than ``cap`` jobs.
    """
    if "Parameters" not in jdl:
        for name in PARAMETER_KEYS[1:]:
            if name in jdl:
                raise JdlError("given without 'Parameters'", line=jdl.line_of(name), attribute=name)
        return None
    line = jdl.line_of("Parameters")
    params = jdl.get("Parameters")
    if isinstance(params, list):
        if not params:
            raise JdlError("the list of parameters is empty", line=line, attribute="Parameters")
        if len(params) > cap:
            raise JdlError(
                f"{len(params)} parameters; at most {cap} jobs per submission",
                line=line,
                attribute="Parameters",
            )
        return list(params)
    if isinstance(params, bool) or not isinstance(params, int) or params < 1:
        raise JdlError(
            "must be a list of values or a positive number of jobs",
            line=line,
            attribute="Parameters",
        )
    if params > cap:
        raise JdlError(
            f"{params} jobs; at most {cap} jobs per submission", line=line, attribute="Parameters"
        )
    start = _number(jdl, "ParameterStart", 0)
    step = _number(jdl, "ParameterStep", 0)
    factor = _number(jdl, "ParameterFactor", 1)
    values: list[Value] = []
    current = start
    for _ in range(params):
        values.append(int(current) if float(current).is_integer() else current)
        current = current * factor + step
        if abs(current) > 1e300:
            raise JdlError(
                "the parameter values grow past any number",
                line=jdl.line_of("ParameterFactor") or line,
                attribute="ParameterFactor",
            )
    return values


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _substitute(value: Value, param: Value, index: int) -> Value:
    if isinstance(value, str):
        return value.replace("%s", _text(param)).replace("%n", str(index))
    if isinstance(value, list):
        return [_substitute(v, param, index) for v in value]
    return value


def expand(jdl: Jdl, cap: int) -> list[Jdl]:
    """The jobs a JDL describes: itself, or one per parameter with ``%s``/``%n`` replaced.

    The expanded jobs keep their parameter as ``Parameter`` and its index as
    ``ParameterIndex``; the ``Parameter*`` attributes of the template are dropped.
    """
    values = parameter_values(jdl, cap)
    if values is None:
        return [jdl]
    out = []
    for index, param in enumerate(values):
        job = Jdl()
        for name, value in jdl.attributes.items():
            if name.lower() in _PARAM_LOWER:
                continue
            job.attributes[name] = _substitute(value, param, index)
            job.lines[name] = jdl.lines[name]
        job.attributes["Parameter"] = param
        job.attributes["ParameterIndex"] = index
        out.append(job)
    return out
