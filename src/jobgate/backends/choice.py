"""Which backends this service drives: built once from the settings (and config file).

The kinds come from the registry (``backends/registry.py``); this module only decides
which ones to build, under which names, and which is the default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from pydantic import BaseModel, ValidationError

from jobgate.backends import config_file, registry, routing
from jobgate.backends.base import Backend
from jobgate.backends.routing import Router
from jobgate.config import Settings
from jobgate.datadir import closed_ancestor
from jobgate.runner.uids import TaskUids
from jobgate.runtimes.choice import runtime_name

DEFAULT_BACKEND = "local"
log = logging.getLogger(__name__)


def make_backends(settings: Settings, kinds: registry.Catalog | None = None) -> dict[str, Backend]:
    """Backends by name, as :func:`plan_backends` declares them. The dispatcher and the
    API route jobs by these names."""
    kinds = kinds or registry.catalog()
    ctx = registry.BackendContext(settings)
    return {
        name: registry.build(kinds.get(_kind_name(options)), name, options, ctx)
        for name, options in plan_backends(settings, kinds).items()
    }


def plan_backends(
    settings: Settings, kinds: registry.Catalog | None = None
) -> dict[str, BaseModel]:
    """Name → options of each backend to build, checked but not built (no side effects).

    With a config file: exactly the backends it declares. Without one: a backend named
    after each kind whose ``from_settings`` asks for one (``local`` always, ``slurm`` when
    ``JOBGATE_BACKEND=slurm`` or ``JOBGATE_SLURM_SHARED_DIR`` is set), plus the kind
    ``JOBGATE_BACKEND`` names. Raises ValueError: a :class:`config_file.ConfigFileError`,
    a config file's default that it does not declare, or a ``JOBGATE_BACKEND`` naming an
    unavailable kind or one that needs options.
    """
    kinds = kinds or registry.catalog()
    planned = _planned(settings, kinds)
    for name, options in planned.items():
        kind = kinds.kinds.get(_kind_name(options))
        if kind is not None and kind.check is not None:
            kind.check(name, options)
    return planned


def _planned(settings: Settings, kinds: registry.Catalog) -> dict[str, BaseModel]:
    if settings.config_file is not None:
        declared = config_file.load(settings.config_file, kinds)
        _default_name(settings, declared, declared.backends)
        return declared.backends
    wanted: dict[str, BaseModel] = {}
    for name, kind in kinds.kinds.items():
        options = kind.from_settings(settings) if kind.from_settings is not None else None
        if options is not None:
            wanted[name] = options
    if settings.backend in kinds.unavailable:
        bad = kinds.unavailable[settings.backend]
        raise ValueError(
            f"JOBGATE_BACKEND={bad.name}: backend kind {bad.name!r} is unavailable: "
            f"{bad.error} (from {bad.target})"
        )
    default_kind = kinds.kinds.get(settings.backend)
    if settings.backend not in wanted and default_kind is not None:
        # A kind without from_settings: JOBGATE_BACKEND alone asks for it, with defaults.
        try:
            wanted[default_kind.name] = default_kind.config.model_validate(
                {"type": default_kind.name}
            )
        except ValidationError as exc:
            fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
            raise ValueError(
                f"JOBGATE_BACKEND={settings.backend}: the kind needs options "
                f"({', '.join(fields)}); "
                "declare the backend in a config file (`jobgate backends` lists its options)"
            ) from None
    # A JOBGATE_BACKEND that names no kind is left to default_backend, which says what is
    # configured (after the backends are built: a deployment may add some itself).
    # ``local`` first: listings show the gateway's own backend before the remote ones.
    return {n: wanted[n] for n in sorted(wanted, key=lambda n: (n != DEFAULT_BACKEND, n))}


def make_router(settings: Settings, backends: Mapping[str, Backend]) -> Router | None:
    """The routing policy of the config file's ``routing`` section (None without one:
    jobs naming no backend go to the default backend)."""
    if settings.config_file is None:
        return None
    return routing.make_router(config_file.load(settings.config_file).routing, backends)


def _kind_name(options: object) -> str:
    kind = getattr(options, "type", None)
    assert isinstance(kind, str), options  # every kind's config has a Literal `type`
    return kind


def tasks_reach_data_dir(settings: Settings) -> bool:
    """Whether executors, as task uids, reach their directories under the data directory
    by host path: the ``process`` runtime under a root service, where they can."""
    if os.geteuid() != 0 or runtime_name(settings) != "process":
        return False
    return closed_ancestor(settings.data_dir) is None


def task_uids(settings: Settings) -> TaskUids | None:
    """The uid pool of the local backends, or None where tasks run as the service."""
    uids = TaskUids.for_service(
        settings.task_uid_base,
        settings.task_uid_count,
        settings.task_user,
        lock_dir=settings.data_dir / "run" / "uids",
    )
    if uids is None or runtime_name(settings) != "process":
        return uids
    closed = closed_ancestor(settings.data_dir)
    if closed is not None:
        # The process runtime's executors use their directory's host path ($TMPDIR…).
        log.error(
            "the process runtime runs tasks as root (UNSAFE): as task uids they could not "
            "reach their directories under %s, since %s is closed to other users; "
            "move JOBGATE_DATA_DIR (e.g. /var/lib/jobgate) or use bwrap",
            settings.data_dir,
            closed,
        )
        return None
    return uids


def default_backend(
    settings: Settings, backends: Mapping[str, object], kinds: registry.Catalog | None = None
) -> str:
    """The backend jobs run on when they name none: the config file's ``default_backend``,
    else ``JOBGATE_BACKEND`` (``local`` unless set; with a config file that names no
    default and no ``JOBGATE_BACKEND``: its first backend). Raises ValueError if not
    configured."""
    declared = None
    if settings.config_file is not None:
        declared = config_file.load(settings.config_file, kinds)
    return _default_name(settings, declared, backends)


def _default_name(
    settings: Settings,
    declared: config_file.DeclaredBackends | None,
    backends: Mapping[str, object],
) -> str:
    name = settings.backend
    if declared is not None:
        if declared.default_backend is not None:
            name = declared.default_backend
        elif "backend" not in settings.model_fields_set:
            name = next(iter(backends))
    if name not in backends:
        hint = ""
        if declared is None:
            known = ", ".join(sorted(registry.catalog().kinds)) or "none installed"
            hint = f" (without a config file, JOBGATE_BACKEND names a backend kind: {known})"
        raise ValueError(f"default backend {name!r} is not configured: {sorted(backends)}{hint}")
    return name
