"""Real workflow engines from PyPI, unmodified, against a live jobgate (bwrap sandbox on),
configured only with the README's "Workflow engines" settings (:mod:`tests.engines.conftest`).

The engines are slow to finish (Snakemake's TES plugin waits 40 s before its first poll),
so the module starts them all at once, as the engine user, and each test waits for its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engines import venvs
from tests.engines.conftest import ENGINE_USER, EngineSite, owned_dir

WORKFLOWS = Path(__file__).with_name("workflows")
TIMEOUT = 420


@dataclass
class EngineRun:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    workdir: Path
    started: float
    output: Path
    jobstore: Path | None = None

    def wait(self) -> tuple[int, str, float]:
        """The engine's exit status, the end of its log, and how long it ran."""
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        took = time.monotonic() - self.started
        return code, self.log.read_text(errors="replace")[-6000:], took


def start(
    name: str,
    argv: list[str],
    workdir: Path,
    venv: Path,
    env: dict[str, str],
    *,
    as_engine_user: bool = True,
) -> Any:
    """``argv`` started in ``workdir`` as the engine user (else as the test's user), with
    the venv first on PATH."""
    log = workdir / f"{name}.log"
    home = workdir / "home"
    home.mkdir()
    drop: list[str] = []
    if as_engine_user:
        os.chown(home, *ENGINE_USER)
        uid, gid = ENGINE_USER
        drop = [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={gid}"]
        drop += ["--clear-groups", "--"]
    full_env = {
        "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*drop, *argv], cwd=workdir, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    return proc, log


@pytest.fixture(scope="module")
def engines(engine_site: EngineSite) -> Iterator[dict[str, EngineRun]]:
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    if not shutil.which("rsync"):
        pytest.skip("rsync is not installed (make test installs it when run as root)")
    url = engine_site.server.url
    runs: dict[str, EngineRun] = {}
    # Built once per machine (~1 min), then reused.
    snakemake = venvs.build("snakemake", venvs.SNAKEMAKE, wheels=venvs.SNAKEMAKE_WHEELS)
    toil = venvs.build("toil", venvs.TOIL)

    # Snakemake: a workflow directory of its own; rules exchange files through the fs
    # storage in the shared host directory. Its jobs pip-install the storage plugin:
    # offline, from a wheel directory, by variables the jobs receive (--envvars).
    sm_dir = owned_dir("jobgate-snakemake-")
    shutil.copy(WORKFLOWS / "Snakefile", sm_dir / "Snakefile")
    os.chown(sm_dir / "Snakefile", *ENGINE_USER)
    prefix = engine_site.shared / sm_dir.name
    argv = [
        f"{snakemake}/bin/snakemake",
        "--executor", "tes",
        "--tes-url", url,
        "--default-storage-provider", "fs",
        "--default-storage-prefix", str(prefix),
        "--jobs", "2",
        "--envvars", "PATH", "PIP_NO_INDEX", "PIP_FIND_LINKS",
    ]  # fmt: skip
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(snakemake / "wheels")}
    proc, log = start("snakemake", argv, sm_dir, snakemake, env)
    runs["snakemake"] = EngineRun(
        "snakemake", proc, log, sm_dir, time.monotonic(), prefix / "results" / "shout.txt"
    )

    # Toil: the job store in the shared host directory, which its TES batch system mounts
    # (as a DIRECTORY input at its own path) because service-info's storage lists it.
    toil_dir = owned_dir("jobgate-toil-")
    shutil.copy(WORKFLOWS / "greet_shout.py", toil_dir / "greet_shout.py")
    jobstore = engine_site.shared / f"{toil_dir.name}-jobstore"
    output = engine_site.shared / f"{toil_dir.name}-out.txt"
    argv = [
        f"{toil}/bin/python", "greet_shout.py", str(jobstore),
        "--output", str(output),
        "--batchSystem", "tes",
        "--tesEndpoint", url,
        "--disableChaining", "true",
        "--retryCount", "0",
        "--setEnv", f"PATH={toil}/bin:/usr/bin:/bin",
    ]  # fmt: skip
    proc, log = start("toil", argv, toil_dir, toil, {})
    runs["toil"] = EngineRun("toil", proc, log, toil_dir, time.monotonic(), output, jobstore)

    # cwl-tes: the gateway stages its file:// inputs and outputs (the directory is in
    # JOBGATE_ALLOWED_DIRS); the tool's inputs go under /var/lib/cwl of the host-root
    # image. Its interpreter may live under root's pyenv, which the engine user cannot
    # read: it runs as the test's user (a client only: its task runs as the engine user).
    old = venvs.old_python()
    if old is not None:
        cwl = venvs.build("cwltes", venvs.CWL_TES, interpreter=old, setup=venvs.CWL_TES_SETUP)
        cwl_dir = Path(tempfile.mkdtemp(prefix="cwl-", dir=engine_site.allowed))
        shutil.copy(WORKFLOWS / "count_lines.cwl", cwl_dir / "count_lines.cwl")
        (cwl_dir / "lines.txt").write_text("one\ntwo\nthree\n")
        (cwl_dir / "job.yml").write_text("text: {class: File, path: lines.txt}\n")
        argv = [f"{cwl}/bin/cwl-tes", "--tes", url, "--outdir", str(cwl_dir / "out")]
        argv += ["count_lines.cwl", "job.yml"]
        proc, log = start("cwl-tes", argv, cwl_dir, cwl, {}, as_engine_user=False)
        runs["cwl-tes"] = EngineRun(
            "cwl-tes", proc, log, cwl_dir, time.monotonic(), cwl_dir / "out" / "count.txt"
        )

    yield runs
    for r in runs.values():
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()
        shutil.rmtree(r.workdir, ignore_errors=True)


def tasks(site: EngineSite, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{site.server.url}/ga4gh/tes/v1/tasks",
        params={"view": "FULL", "page_size": 256, **params},
        timeout=30,
    )
    r.raise_for_status()
    return list(r.json()["tasks"])


def test_snakemake_two_rules_run_as_tes_tasks(
    engines: dict[str, EngineRun], engine_site: EngineSite
) -> None:
    run = engines["snakemake"]
    code, log, took = run.wait()
    assert code == 0, log
    assert run.output.read_text() == f"HELLO FROM {ENGINE_USER[0]}\n"
    storage = str(run.output.parent.parent)
    ours = [
        t
        for t in tasks(engine_site, name_prefix="snakejob.")
        if storage in t["inputs"][0].get("content", "")
    ]
    assert sorted(t["name"].split(".")[1] for t in ours) == ["greet", "shout"]
    assert {t["state"] for t in ours} == {"COMPLETE"}
    print(f"snakemake workflow: {took:.1f} s")


def test_toil_two_jobs_run_as_tes_tasks_sharing_the_job_store(
    engines: dict[str, EngineRun], engine_site: EngineSite
) -> None:
    run = engines["toil"]
    code, log, took = run.wait()
    assert code == 0, log
    assert run.output.read_text() == f"HELLO FROM TOIL AS {ENGINE_USER[0]}\n"
    jobstore = str(run.jobstore)
    ours = [
        t for t in tasks(engine_site) if any(i.get("path") == jobstore for i in t.get("inputs", []))
    ]
    # Bound in place: the job store is a DIRECTORY input at its own path.
    assert all(
        i == {"url": f"file://{jobstore}", "path": jobstore, "type": "DIRECTORY"}
        for t in ours
        for i in t["inputs"]
    )
    assert sorted(t["name"].split()[0].strip("'") for t in ours) == ["greet", "shout"]
    assert {t["state"] for t in ours} == {"COMPLETE"}
    print(f"toil workflow: {took:.1f} s")


def test_cwl_tes_runs_a_one_step_workflow_as_a_tes_task(
    engines: dict[str, EngineRun], engine_site: EngineSite
) -> None:
    if "cwl-tes" not in engines:
        pytest.skip("no Python 3.7 to 3.9 on this host for cwl-tes's cwltool 1.0")
    run = engines["cwl-tes"]
    code, log, took = run.wait()
    assert code == 0, log
    # wc -l of the staged input, at the path cwl-tes gave it under /var/lib/cwl.
    count, path = run.output.read_text().split()
    assert count == "3" and path.startswith("/var/lib/cwl/") and path.endswith("/lines.txt")
    document = f"file://{run.workdir}/count_lines.cwl"
    ours = [t for t in tasks(engine_site) if t.get("tags", {}).get("CWLDocumentId") == document]
    assert [t["state"] for t in ours] == ["COMPLETE"]
    print(f"cwl-tes workflow: {took:.1f} s")
