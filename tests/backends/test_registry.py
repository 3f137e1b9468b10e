"""The backend registry: discovery from entry points, the config file built from it,
which backends a site without a config file gets, and the grouped settings."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobgate.backends import config_file, registry
from jobgate.backends.base import Backend, BackendStatus
from jobgate.backends.choice import default_backend, make_backends
from jobgate.backends.kinds import slurm as slurm_kind
from jobgate.config import GROUPS, DispatchSettings, Settings


class FakeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["fake"]
    colour: str = Field(default="blue", pattern="^[a-z]+$", description="A colour.")


class FakeBackend(Backend):
    """Only built, never run: these tests are about which backends exist."""

    def __init__(self, name: str, colour: str) -> None:
        super().__init__()
        self.name = name
        self.colour = colour

    async def submit(self, job: object, ctx: object) -> str:
        raise NotImplementedError

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        return {}

    async def cancel(self, native_id: str) -> None:
        pass

    async def known_ids(self) -> list[str]:
        return []


FAKE = registry.BackendKind(
    name="fake",
    config=FakeOptions,
    build=lambda name, opts, ctx: FakeBackend(name, opts.colour),
    summary="a fake",
)
NOT_A_KIND = object()
WRONG_NAME = registry.BackendKind(name="other", config=FakeOptions, build=FAKE.build)


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=registry.GROUP)


def fake_catalog(*extra: EntryPoint) -> registry.Catalog:
    return registry.discover([ep("fake", f"{__name__}:FAKE"), *extra])


def test_the_built_in_kinds_come_from_jobgates_entry_points() -> None:
    found = registry.catalog()
    assert {"local", "slurm"} <= set(found.kinds)
    assert found.kinds["slurm"].config is slurm_kind.SlurmOptions
    slurm = next(k for k in found.describe() if k["kind"] == "slurm")
    shared = next(o for o in slurm["options"] if o["name"] == "shared_dir")
    assert shared["required"] and "nodes see" in shared["description"]


def test_a_kind_that_does_not_load_is_reported_and_the_others_still_work() -> None:
    found = fake_catalog(
        ep("broken", "jobgate_no_such_module_xyz:KIND"),
        ep("notakind", f"{__name__}:NOT_A_KIND"),
        ep("misnamed", f"{__name__}:WRONG_NAME"),
    )
    assert set(found.kinds) == {"fake"}
    errors = {n: u.error for n, u in found.unavailable.items()}
    assert errors["broken"].startswith("ModuleNotFoundError:")
    assert "jobgate_no_such_module_xyz" in errors["broken"]
    assert "not a BackendKind" in errors["notakind"]
    assert "'other'" in errors["misnamed"]
    with pytest.raises(registry.KindUnavailable, match="jobgate_no_such_module_xyz"):
        found.get("broken")
    with pytest.raises(registry.UnknownKind, match="known kinds: fake"):
        found.get("pbs")
    listed = {k["kind"]: k for k in found.describe()}
    assert listed["broken"]["available"] is False
    assert listed["fake"]["options"][0]["name"] == "colour"


def test_two_distributions_claiming_one_name_make_it_unavailable() -> None:
    found = fake_catalog(ep("fake", "elsewhere:KIND"))
    assert "fake" not in found.kinds
    assert "more than once" in found.unavailable["fake"].error


def test_a_config_that_is_not_a_frozen_strict_model_is_refused() -> None:
    class Loose(BaseModel):
        type: Literal["loose"]

    loose = registry.BackendKind(name="loose", config=Loose, build=FAKE.build)
    with pytest.raises(ValueError, match="frozen and forbid extra"):
        registry._checked("loose", loose)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backends.yaml"
    path.write_text(text)
    return path


def test_a_config_file_takes_the_options_of_each_kind(tmp_path: Path) -> None:
    found = fake_catalog()
    path = write(tmp_path, "backends: {a: {type: fake, colour: red}, b: {type: fake}}\n")
    declared = config_file.load(path, found)
    assert declared.backends == {
        "a": FakeOptions(type="fake", colour="red"),
        "b": FakeOptions(type="fake"),
    }
    backends = make_backends(Settings(config_file=path, data_dir=tmp_path / "d"), found)
    assert {n: (registry.kind_of(b), b.colour) for n, b in backends.items()} == {  # type: ignore[attr-defined]
        "a": ("fake", "red"),
        "b": ("fake", "blue"),
    }


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "backends: {hpc: {type: slurm, shared_dir: /s, submit_rate: -1}}\n",
            ["backends.hpc.submit_rate:", "greater than 0", "backend 'hpc', type slurm"],
        ),
        (
            "backends: {gpu: {type: slurm}}\n",
            ["backends.gpu.shared_dir:", "Field required", "backend 'gpu'"],
        ),
        (
            "backends: {l: {type: local, slots: 2, colour: red}}\n",
            ["backends.l.colour:", "Extra inputs", "backend 'l', type local"],
        ),
        ("backends: {x: {type: pbs}}\n", ["backends.x.type:", "unknown backend kind 'pbs'"]),
    ],
)
def test_option_errors_name_the_backend_and_the_field(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    with pytest.raises(config_file.ConfigFileError) as caught:
        config_file.load(write(tmp_path, text))
    for needle in needles:
        assert needle in str(caught.value)


def test_a_config_file_using_an_unavailable_kind_says_which_and_why(tmp_path: Path) -> None:
    found = fake_catalog(ep("pulsar", "jobgate_no_such_module_xyz.pulsar:KIND"))
    path = write(tmp_path, "backends: {p: {type: pulsar, url: x}, f: {type: fake}}\n")
    with pytest.raises(config_file.ConfigFileError) as caught:
        config_file.load(path, found)
    msg = str(caught.value)
    assert "backends.p.type: backend kind 'pulsar' is unavailable" in msg
    assert "ModuleNotFoundError" in msg and "jobgate_no_such_module_xyz" in msg


def test_the_config_file_schema_is_built_from_the_kinds() -> None:
    schema = config_file.file_model(fake_catalog()).model_json_schema()
    assert schema["$defs"]["FakeOptions"]["properties"]["colour"]["description"] == "A colour."


def test_without_a_config_file_the_settings_pick_the_kinds(tmp_path: Path) -> None:
    found = registry.Catalog({"slurm": registry.catalog().kinds["slurm"], "fake": FAKE})
    # No `local` kind here, and `fake` declares no from_settings: nothing to default to.
    plain = Settings(data_dir=tmp_path)
    assert make_backends(plain, found) == {}
    with pytest.raises(ValueError, match="default backend 'local' is not configured"):
        default_backend(plain, {})
    settings = Settings(data_dir=tmp_path, backend="slurm", slurm_partition="p")
    backends = make_backends(settings, found)
    assert list(backends) == ["slurm"] and registry.kind_of(backends["slurm"]) == "slurm"
    slurm = backends["slurm"]
    assert slurm.config.shared_dir == tmp_path / "slurm"  # type: ignore[attr-defined]
    assert slurm.config.defaults.partition == "p"  # type: ignore[attr-defined]
    assert default_backend(settings, backends, found) == "slurm"
    # Only JOBGATE_BACKEND=fake configures it (with its defaults).
    fake = make_backends(Settings(data_dir=tmp_path, backend="fake"), found)
    assert {n: registry.kind_of(b) for n, b in fake.items()} == {"fake": "fake"}


def test_a_default_backend_naming_no_kind_is_refused_with_the_reason(tmp_path: Path) -> None:
    found = registry.discover([ep("pulsar", "jobgate_no_such_module_xyz:KIND")])
    pbs = Settings(data_dir=tmp_path, backend="pbs")
    assert make_backends(pbs, found) == {}
    with pytest.raises(ValueError, match=r"'pbs' is not configured: \[\] \(without a config"):
        default_backend(pbs, {})
    with pytest.raises(ValueError, match="'pulsar' is unavailable: ModuleNotFoundError"):
        make_backends(Settings(data_dir=tmp_path, backend="pulsar"), found)
    slurm_kinds = registry.Catalog({"slurm": registry.catalog().kinds["slurm"]})
    slurm_only = Settings(data_dir=tmp_path, backend="slurm")
    assert list(make_backends(slurm_only, slurm_kinds)) == ["slurm"]  # its from_settings


class NeedyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["needy"]
    url: str


def test_a_default_kind_with_required_options_needs_a_config_file(tmp_path: Path) -> None:
    needy = registry.BackendKind(name="needy", config=NeedyOptions, build=FAKE.build)
    found = registry.Catalog({"needy": needy})
    with pytest.raises(ValueError, match=r"JOBGATE_BACKEND=needy: the kind needs options \(url\)"):
        make_backends(Settings(data_dir=tmp_path, backend="needy"), found)


def test_slurm_submit_patience_overrides_the_gateways_only_when_set(tmp_path: Path) -> None:
    opts = slurm_kind.SlurmOptions(type="slurm", shared_dir=tmp_path)
    assert slurm_kind.submit_patience(Settings(submit_patience=30), opts) == 30
    both = Settings(submit_patience=30, slurm_submit_patience=90)
    assert slurm_kind.submit_patience(both, opts) == 90
    own = opts.model_copy(update={"submit_patience": 5.0})
    assert slurm_kind.submit_patience(both, own) == 5


# -- settings groups -----------------------------------------------------------------------


def test_every_flat_setting_is_in_exactly_one_group() -> None:
    shown = [f for group in GROUPS.values() for f in group.flat_fields()]
    assert len(shown) == len(set(shown)), "a setting shown by two groups"
    assert set(shown) == set(Settings.model_fields)
    assert all(isinstance(getattr(Settings(), n), g) for n, g in GROUPS.items())


def test_groups_are_frozen_views_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JOBGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("JOBGATE_SUBMIT_PATIENCE", "12.5")
    monkeypatch.setenv("JOBGATE_SUBMIT_RETRY_MAX_DELAY", "3")
    monkeypatch.setenv("JOBGATE_POLL_INTERVAL", "0.25")
    monkeypatch.setenv("JOBGATE_WEBHOOK_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("JOBGATE_RUNTIME", "process")
    s = Settings()
    d = s.dispatch
    assert isinstance(d, DispatchSettings)
    assert (d.submit_patience, d.submit_retry_max_delay, d.poll_interval) == (12.5, 3, 0.25)
    assert (d.jobs_dir, d.logs_dir) == (tmp_path / "jobs", tmp_path / "logs")
    assert s.submit_patience == 12.5  # the flat names keep working
    assert s.webhooks.max_attempts == 3 and s.runtimes.name == "process"
    assert s.store.url == s.db_url and s.auth_settings.modes == s.auth
    with pytest.raises(ValidationError):
        d.poll_interval = 1  # type: ignore[misc]


def test_submit_patience_defaults_and_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().submit_patience, Settings().submit_retry_max_delay) == (600, 60)
    monkeypatch.setenv("JOBGATE_SUBMIT_PATIENCE", "0")
    with pytest.raises(ValidationError, match="submit_patience"):
        Settings()


def test_every_backend_gets_the_gateways_submit_patience_unless_its_kind_sets_one(
    tmp_path: Path,
) -> None:
    kinds = registry.Catalog({"slurm": registry.catalog().kinds["slurm"], "fake": FAKE})
    flat = Settings(
        data_dir=tmp_path, backend="fake", submit_patience=42, slurm_shared_dir=tmp_path
    )
    backends = make_backends(flat, kinds)
    assert {n: b.submit_patience for n, b in backends.items()} == {"fake": 42, "slurm": 42}
    own = Settings(**{**flat.model_dump(exclude_unset=True), "slurm_submit_patience": 90})
    assert make_backends(own, kinds)["slurm"].submit_patience == 90


def test_the_dispatcher_takes_its_share_of_the_dispatch_group() -> None:
    from jobgate.api.app import dispatch_settings

    s = Settings(submit_retry_max_delay=5, poll_interval=0.5, max_attempts=4)
    d = dispatch_settings(s)
    assert (d.retry_max_delay, d.poll_interval, d.max_attempts) == (5, 0.5, 4)
    assert (d.jobs_dir, d.logs_dir) == (s.jobs_dir, s.logs_dir)
