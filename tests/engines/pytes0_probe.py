"""Run by the py-tes 0.4.2 venv (not imported by the suite): TES calls as Toil and
Snakemake's TES plugin make them, printing what the client parsed as JSON.

    probe.py BASE_URL calls        service-info, a task in every view, a listing
    probe.py BASE_URL cancel       polls a sleeping task while canceling it
    probe.py - unmarshal           parses the task documents read from stdin
"""

import json
import sys
import time

import tes
from tes.utils import unmarshal


def shell(script):
    return tes.Executor(image="alpine", command=["sh", "-c", script])


def states_until_final(client, task_id, seen, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for view in ("MINIMAL", "BASIC", "FULL"):
            state = client.get_task(task_id, view).state
            if not seen or seen[-1] != state:
                seen.append(state)
        if seen[-1] not in ("QUEUED", "INITIALIZING", "RUNNING"):
            return seen
        time.sleep(0.02)
    raise SystemExit(f"task {task_id} did not end: {seen}")


def calls(client):
    out = {}
    try:
        out["service_info"] = client.get_service_info().as_dict()
    except Exception as exc:  # reported, not fatal: some prefixes have no 1.0 service-info
        out["service_info_error"] = type(exc).__name__
    task = tes.Task(
        name="probe",
        inputs=[tes.Input(path="/data/in.txt", content="hello\n")],
        outputs=[],
        resources=tes.Resources(cpu_cores=1),
        executors=[shell("cat /data/in.txt; echo err >&2")],
        tags={"by": "pytes0"},
    )
    task_id = client.create_task(task)
    client.wait(task_id, timeout=60)
    views = {v: client.get_task(task_id, v).as_dict() for v in ("MINIMAL", "BASIC", "FULL")}
    out["task"] = json.loads(json.dumps(views, default=str))
    listed = {v: client.list_tasks(v, page_size=5).as_dict() for v in ("MINIMAL", "BASIC", "FULL")}
    out["listed"] = {v: [t["id"] for t in r["tasks"]] for v, r in listed.items()}
    return out


def cancel(client):
    task_id = client.create_task(tes.Task(executors=[shell("sleep 300")]))
    seen = []
    deadline = time.time() + 60
    while client.get_task(task_id, "MINIMAL").state != "RUNNING":
        if time.time() > deadline:
            raise SystemExit("never RUNNING")
        time.sleep(0.05)
    seen.append("RUNNING")
    client.cancel_task(task_id)
    return {"id": task_id, "states": states_until_final(client, task_id, seen)}


def main():
    base, action = sys.argv[1], sys.argv[2]
    if action == "unmarshal":
        parsed = [unmarshal(doc, tes.Task).as_dict() for doc in json.load(sys.stdin)]
        out = json.loads(json.dumps(parsed, default=str))
    else:
        client = tes.HTTPClient(base, timeout=30)
        out = calls(client) if action == "calls" else cancel(client)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
