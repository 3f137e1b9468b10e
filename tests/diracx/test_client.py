"""DiracX's own client (``dirac`` CLI and ``diracx-api``/``diracx-client`` 0.7) against a
live jobgate: jobs submitted in JDL run on the local backend and reach Done."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from tests.conftest import Server
from tests.diracx.conftest import Dirac, http
from tests.support import sleep_marker, uid, wait_procs

FINAL = {"Done", "Failed", "Killed"}


def statuses(server: Server, token: str, job_ids: list[int]) -> dict[int, dict[str, Any]]:
    with http(server, token) as c:
        r = c.post(
            "/api/jobs/search",
            json={"search": [{"parameter": "JobID", "operator": "in", "values": job_ids}]},
        )
    assert r.status_code == 200, r.text
    return {j["JobID"]: j for j in r.json()}


def wait_status(
    server: Server, token: str, job_ids: list[int], wanted: set[str], timeout: float = 30
) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = statuses(server, token, job_ids)
        if len(jobs) == len(job_ids) and all(j["Status"] in wanted for j in jobs.values()):
            return jobs
        assert time.monotonic() < deadline, jobs
        time.sleep(0.1)


def test_cli_submits_a_jdl_that_runs_to_done(users: dict[str, Dirac]) -> None:
    alice = users["alice"]
    group = f"cli-{uid()}"
    (alice.home / "hello.jdl").write_text(
        f"""[
        Executable = "/bin/echo";
        Arguments = "hello from DiracX";  // comments are fine
        JobName = "hello";
        JobGroup = {group};
        StdOutput = "std.out";
        OutputSandbox = {{"std.out"}};
        ]"""
    )
    out = alice.cli("jobs", "submit", "hello.jdl")
    m = re.search(r"Inserted 1 jobs with ids: (\d+)", out)
    assert m, out
    job_id = int(m.group(1))
    wait_status(alice.server, alice.token, [job_id], FINAL)

    found = json.loads(alice.cli("jobs", "search", "--condition", f"JobGroup eq {group}"))
    assert found == [
        {
            "JobID": job_id,
            "Status": "Done",
            "MinorStatus": found[0]["MinorStatus"],
            "ApplicationStatus": "Unknown",
            "JobGroup": group,
            "Site": None,
            "JobName": "hello",
            "Owner": "token:alice",
            "LastUpdateTime": found[0]["LastUpdateTime"],
        }
    ]
    me = json.loads(alice.cli("whoami"))
    assert me["preferred_username"] == "token:alice"


def test_parametric_jobs_with_sandboxes_through_the_python_api(users: dict[str, Dirac]) -> None:
    alice = users["alice"]
    group = f"param-{uid()}"
    work = alice.home / group
    work.mkdir()
    (work / "run.sh").write_text('echo "job $1 saw $(cat data.txt)" > result.txt\n')
    (work / "data.txt").write_text("the input\n")
    result = alice.python(
        f"""
pfn = await create_sandbox([pathlib.Path("{work}/run.sh")], client=api)
again = await create_sandbox([pathlib.Path("{work}/run.sh")], client=api)
data = await create_sandbox([pathlib.Path("{work}/data.txt")], client=api)
jdl = '''Executable = "run.sh"; Arguments = "%s"; JobGroup = "{group}";
Parameters = 3; ParameterStart = 1; ParameterStep = 1;
InputSandbox = {{"PFN", "DATA"}}; OutputSandbox = {{"result.txt"}};'''
jdl = jdl.replace("PFN", pfn).replace("DATA", data)
inserted = await api.jobs.submit_jdl_jobs([jdl])
ids = [j.job_id for j in inserted]
cond = [{{"parameter": "JobGroup", "operator": "eq", "value": "{group}"}}]
for _ in range(300):
    jobs = await api.jobs.search(search=cond, parameters=["JobID", "Status", "Parameter"])
    if all(j["Status"] in ("Done", "Failed") for j in jobs):
        break
    await asyncio.sleep(0.1)
summary = await api.jobs.summary(grouping=["Status", "JobGroup"], search=cond)
boxes = await api.jobs.get_job_sandboxes(ids[1])
out = pathlib.Path("{work}/out")
await download_sandbox(boxes["Output"][0], out, client=api)
result = {{
    "pfn": pfn, "again": again, "data": data, "ids": ids,
    "status": [i.status for i in inserted], "jobs": jobs, "summary": summary, "boxes": boxes,
    "result": (out / "work" / "result.txt").read_text(),
}}
"""
    )
    assert result["again"] == result["pfn"]
    assert result["status"] == ["Waiting"] * 3
    assert sorted(result["ids"]) == result["ids"]
    assert result["jobs"] == [
        {"JobID": i, "Status": "Done", "Parameter": str(p)}
        for i, p in zip(result["ids"], (1, 2, 3), strict=True)
    ]
    assert result["summary"] == [{"Status": "Done", "JobGroup": group, "count": 3}]
    # Both input sandboxes are extracted into the job's directory, in order.
    assert [b.rsplit(".", 2)[0] for b in result["boxes"]["Input"]] == [
        result["pfn"].rsplit(".", 2)[0],
        result["data"].rsplit(".", 2)[0],
    ]
    assert result["result"] == "job 2 saw the input\n"


def test_kill_reschedule_metadata_and_heartbeat(users: dict[str, Dirac]) -> None:
    alice = users["alice"]
    marker = sleep_marker()
    result = alice.python(
        f"""
inserted = await api.jobs.submit_jdl_jobs(['Executable = "sleep"; Arguments = "{marker}";'])
result = inserted[0].job_id
"""
    )
    job_id = int(result)
    wait_status(alice.server, alice.token, [job_id], {"Running"})
    wait_procs(marker, present=True)
    result = alice.python(
        f"""
from datetime import datetime, timezone
now = datetime.now(timezone.utc).isoformat()
beat = await api.jobs.add_heartbeat({{"{job_id}": {{"LoadAverage": 1.5}}}})
changed = await api.jobs.set_job_statuses(
    {{"{job_id}": {{now: {{"Status": "Killed", "ApplicationStatus": "stopped by me"}}}}}}
)
await api.jobs.patch_metadata({{{job_id}: {{"UserPriority": 7, "Site": "LCG.CERN.cern"}}}})
result = {{"beat": beat, "changed": changed.success["{job_id}"].status}}
"""
    )
    assert result == {"beat": [], "changed": "Killed"}
    wait_procs(marker, present=False)
    jobs = wait_status(alice.server, alice.token, [job_id], {"Killed"})
    with http(alice.server, alice.token) as c:
        shown = c.post(
            "/api/jobs/search",
            json={
                "parameters": [
                    "ApplicationStatus",
                    "UserPriority",
                    "Site",
                    "StartExecTime",
                    "EndExecTime",
                ],
                "search": [{"parameter": "JobID", "operator": "eq", "value": job_id}],
            },
        ).json()
    started, ended = shown[0].pop("StartExecTime"), shown[0].pop("EndExecTime")
    assert started is not None and ended is not None and started < ended
    assert shown == [
        {"ApplicationStatus": "stopped by me", "UserPriority": 7, "Site": "LCG.CERN.cern"}
    ]
    assert jobs[job_id]["Status"] == "Killed"
    resched = alice.python(
        f"""
r = await api.jobs.reschedule_jobs(body={{"job_ids": [{job_id}]}})
result = r
"""
    )
    assert resched["success"][str(job_id)]["RescheduleCounter"] == 1
    wait_procs(marker, present=True)
    with http(alice.server, alice.token) as c:
        assert c.post("/api/jobs/kill", params={"job_ids": [job_id]}).json() == [job_id]
        wait_procs(marker, present=False)
        wait_status(alice.server, alice.token, [job_id], {"Killed"})
        # reset_jobs: the count starts again, so the reschedule limit applies afresh.
        again = c.post(
            "/api/jobs/reschedule", params={"reset_jobs": True}, json={"job_ids": [job_id]}
        )
        assert again.json()["success"][str(job_id)]["RescheduleCounter"] == 1
        wait_procs(marker, present=True)
        assert c.delete("/api/jobs/", params={"job_ids": [job_id]}).json() == [job_id]
        wait_procs(marker, present=False)
    assert statuses(alice.server, alice.token, [job_id]) == {}


def test_pages_and_access(users: dict[str, Dirac], dx_server: Server) -> None:
    alice, bob, admin = users["alice"], users["bob"], users["admin"]
    group = f"pages-{uid()}"
    jdls = [f'Executable = "true"; JobGroup = "{group}"; JobName = "n{i}";' for i in range(3)]
    code = f"""
jobs = await api.jobs.submit_jdl_jobs({jdls!r})
ids = [j.job_id for j in jobs]
cond = [{{"parameter": "JobGroup", "operator": "eq", "value": "{group}"}}]
page, rng = await api.jobs.search(
    search=cond, parameters=["JobID", "JobName"],
    sort=[{{"parameter": "JobID", "direction": "desc"}}],
    page=2, per_page=2, cls=lambda _, jobs, headers: (jobs, headers.get("Content-Range")),
)
result = {{"ids": ids, "page": page, "range": rng}}
"""
    got = alice.python(code)
    ids = got["ids"]
    assert got["page"] == [{"JobID": ids[0], "JobName": "n0"}]
    assert got["range"] == "jobs 2-2/3"
    look = f"""
result = await api.jobs.search(
    search=[{{"parameter": "JobGroup", "operator": "eq", "value": "{group}"}}], parameters=["JobID"]
)
"""
    assert bob.python(look) == []
    assert admin.python(look) == [{"JobID": i} for i in ids]
    refused = bob.python(
        f"""
from azure.core.exceptions import HttpResponseError
try:
    kill = {{"2026-01-01T00:00:00Z": {{"Status": "Killed"}}}}
    await api.jobs.set_job_statuses({{"{ids[0]}": kill}})
    result = "changed"
except HttpResponseError as exc:
    result = exc.status_code
"""
    )
    assert refused == 404


def test_the_client_reads_the_discovery_documents(dx_server: Server) -> None:
    doc = httpx.get(dx_server.url + "/.well-known/openid-configuration").json()
    assert doc["token_endpoint"] == dx_server.url + "/api/auth/token"
    meta = httpx.get(dx_server.url + "/.well-known/dirac-metadata").json()
    assert meta["virtual_organizations"]["jobgate"]["default_group"] == "jobgate_user"
    refused = httpx.post(doc["token_endpoint"], data={"grant_type": "refresh_token"})
    assert refused.status_code == 400
    assert "service token" in refused.json()["detail"]
