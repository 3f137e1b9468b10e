"""Schemathesis over the whole OpenAPI document, against a real server.

Schemathesis generates requests for every operation from the document's own schemas
(valid ones and invalid ones) and sends them to ``jobgate serve``, once with the admin
token and once with no credential. Every answer must be no server error (5xx), carry a
status the document lists for that operation, and match the schema the document gives
for that status. Bounded and deterministic: schemathesis' deterministic mode, a fixed
seed, a few examples per operation and mode.

Path ids are drawn half the time from real objects made before the run (a held job, a
canceled one, a finished one, a workstep, a sandbox, a token), so the generated requests
reach the code behind the 404.

The Server-Sent Events streams are special-cased: the all-jobs stream never ends by design
(clients read it until they hang up), nor does a live job's, so schemathesis reads at most
two events or half a second of each, checks those events against the documented event
schema, and skips the (slow, boundary-value) coverage phase there.

The CLI is used (not the pytest plugin): it is schemathesis' stable interface, the one CI
runs elsewhere, and it runs the coverage phase (boundary values) as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TERMINAL, Server

SEED = 20261202
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
STREAMS = r"/events/stream$"
RUNS = {
    # name: (send the admin token, phases, examples per operation and mode)
    "admin-token": (True, "examples,coverage,fuzzing", 8),
    # Everything but the public routes answers 401 before its handler: fewer cases do.
    "no-token": (False, "examples,fuzzing", 5),
}


def auth(server: Server) -> dict[str, str]:
    token = (server.data_dir / "admin-token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


def make_objects(server: Server) -> dict[str, list[str]]:
    """Real ids for path parameters: jobs in several states, a sandbox, a token."""
    with httpx.Client(base_url=server.url, headers=auth(server), timeout=30) as api:

        def submit(**job: Any) -> str:
            r = api.post("/api/v1/jobs", json={"script": "echo hello", **job})
            assert r.status_code == 201, r.text
            job_id: str = r.json()["id"]
            return job_id

        held = submit(hold=True)
        canceled = submit(hold=True)
        assert api.post(f"/api/v1/jobs/{canceled}/cancel").status_code == 200
        done = submit(output_sandbox=["/tmp/*"], script="echo out > /tmp/out.txt")
        workstep_request = {"container_image": "x", "executable_entrypoint": "true"}
        r = api.post("/v1/worksteps", json=workstep_request)
        assert r.status_code == 200, r.text
        workstep = r.json()["id"]
        r = api.post("/api/v1/sandboxes", content=b"a sandbox file\n")
        assert r.status_code in (200, 201), r.text
        sandbox = r.json()["sha256"]
        r = api.post("/api/v1/tokens", json={"owner": "fuzzed", "scopes": ["read"]})
        assert r.status_code == 201, r.text
        token = r.json()["id"]
        deadline = time.monotonic() + 30
        while api.get(f"/api/v1/jobs/{done}").json()["state"] not in TERMINAL:
            assert time.monotonic() < deadline, "the finished job never finished"
            time.sleep(0.1)
    jobs = [held, canceled, done, workstep]
    return {"jobs": jobs, "sandboxes": [sandbox], "tokens": [token]}


def config_file(path: Path, objects: dict[str, list[str]], max_examples: int) -> Path:
    """A schemathesis.toml: generation bounds, and real ids for half the path parameters."""
    lines = [
        f"seed = {SEED}",
        "request-timeout = 30",
        "[generation]",
        f"max-examples = {max_examples}",
        "deterministic = true",
        # The credential is the run's, never a generated Authorization header.
        "with-security-parameters = false",
        "[phases.stateful]",
        "enabled = false",
        "[[operations]]",
        f'include-path-regex = "{STREAMS}"',
        "request-timeout = 0.5",
        "max-stream-events = 2",
        "phases.coverage.enabled = false",
        "generation.max-examples = 4",
    ]
    for name, values in objects.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}"]
    lines.append("[parameters]")
    for param, dictionary in {
        "job_id": "jobs",
        "task_id": "jobs",
        "workstep_id": "jobs",
        "jobid": "jobs",
        "sha256": "sandboxes",
        "token_id": "tokens",
    }.items():
        lines.append(f'"path.{param}" = {{ dictionary = "{dictionary}", probability = 0.5 }}')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Service tokens on; one slot; generated inputs cannot stage from this machine."""
    env: dict[str, str | None] = {
        "JOBGATE_AUTH": "token",
        "JOBGATE_SLOTS": "1",
        "JOBGATE_STAGING_ALLOWED_HOSTS": None,
        "JOBGATE_STAGING_ATTEMPTS": "1",
        "JOBGATE_HTTP_TIMEOUT": "2",
        "JOBGATE_WEBHOOK_MAX_ATTEMPTS": "1",
    }
    srv = Server(tmp_path_factory.mktemp("schemathesis") / "data", env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def objects(fuzz_server: Server) -> dict[str, list[str]]:
    return make_objects(fuzz_server)


@pytest.mark.parametrize("run", list(RUNS))
def test_every_operation_answers_as_documented(
    run: str, fuzz_server: Server, objects: dict[str, list[str]], tmp_path: Path
) -> None:
    with_token, phases, max_examples = RUNS[run]
    config = config_file(tmp_path / "schemathesis.toml", objects, max_examples)
    report = tmp_path / "report.json"
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "--no-color",
        "run",
        fuzz_server.url + "/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        phases,
        "--mode",
        "all",
        "--workers",
        "1",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    if with_token:
        args += ["--header", f"Authorization: {auth(fuzz_server)['Authorization']}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = done.stdout + done.stderr
    print(output[output.find("SUMMARY") :])  # the figures, shown with pytest -s
    # Which operations it reached (a document that fails to load tests nothing).
    doc = httpx.get(fuzz_server.url + "/openapi.json").json()
    n = sum(len(ops) for ops in doc["paths"].values())
    assert n >= 39 and f"{n} selected / {n} total" in output, output[-5000:]
    assert done.returncode == 0, (
        output[-20000:] + "\n--- server log ---\n" + fuzz_server.log()[-5000:]
    )
