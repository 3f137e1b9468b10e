"""What staging would refuse in a task, judged before it runs (no DNS, no transfer).

Submission does not refuse these (a name may resolve differently later, a directory may be
allowed by then); ``validate`` reports them as warnings: the job would be created but would
end SYSTEM_ERROR when it is staged.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from jobgate.domain.models import TaskSpec
from jobgate.errors import StagingError
from jobgate.staging.guard import Guard
from jobgate.staging.local import local_path

_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "s3": 443}


def url_problems(
    spec: TaskSpec, *, allowed_dirs: tuple[Path, ...], guard: Guard, where: str = "body"
) -> list[dict[str, str]]:
    """``{where, what}`` for each input or output URL staging would refuse."""
    out: list[dict[str, str]] = []
    items = [("inputs", i, x.url) for i, x in enumerate(spec.inputs or [])]
    items += [("outputs", i, x.url) for i, x in enumerate(spec.outputs or [])]
    for kind, i, url in items:
        if not url:
            continue
        loc = f"{where}.{kind}[{i}].url"
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if url.startswith("/") or scheme == "file":
            try:
                local_path(url, allowed_dirs, what=kind[:-1])
            except StagingError as exc:
                out.append({"where": loc, "what": exc.message})
            continue
        if scheme in ("http", "https", "ftp") and url.split(":", 1)[1].startswith("//"):
            parsed = urlsplit(url)
            try:
                port = parsed.port or _DEFAULT_PORTS[scheme]
            except ValueError:
                out.append({"where": loc, "what": "invalid port"})
                continue
            reason = guard.precheck(parsed.hostname or "", port)
            if reason is not None:
                out.append({"where": loc, "what": f"staging would refuse it: {reason}"})
    return out
