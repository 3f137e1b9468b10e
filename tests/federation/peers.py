"""Real jobgate instances as remote TES servers, and a gateway in front of them."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import Server

TES = "/ga4gh/tes/v1"
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def remote(base: Path, name: str, **env: str) -> Server:
    """A jobgate instance with its own data dir and port, serving TES to the gateway."""
    outputs = base / f"{name}-files"
    outputs.mkdir(parents=True, exist_ok=True)
    defaults = {"JOBGATE_ALLOWED_DIRS": str(outputs)}
    return Server(base / name, {**defaults, **env})


def gateway_config(path: Path, backends: dict[str, Any], **more: Any) -> Path:
    path.write_text(yaml.safe_dump({"backends": backends, **more}))
    return path


def tes_entry(srv: Server, **options: Any) -> dict[str, Any]:
    return {"type": "tes", "url": srv.url + TES, "poll_interval": 0.2, **options}


def headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def submit(srv: Server, task: dict[str, Any], token: str | None = None) -> str:
    r = httpx.post(srv.url + TES + "/tasks", json=task, headers=headers(token), timeout=30)
    assert r.status_code == 200, r.text
    task_id: str = r.json()["id"]
    return task_id


def get(srv: Server, task_id: str, token: str | None = None, view: str = "FULL") -> Any:
    r = httpx.get(
        f"{srv.url}{TES}/tasks/{task_id}", params={"view": view}, headers=headers(token), timeout=30
    )
    return r


def wait(
    srv: Server,
    task_id: str,
    token: str | None = None,
    states: set[str] = FINAL,
    timeout: float = 40,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = get(srv, task_id, token)
        if r.status_code == 200:
            task = r.json()
            if task["state"] in states:
                return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} not in {states} after {timeout}s: {task}")


def remote_tasks(srv: Server, job_id: str, token: str | None = None) -> list[dict[str, Any]]:
    """The tasks on ``srv`` a gateway created for its job ``job_id``."""
    r = httpx.get(
        srv.url + TES + "/tasks",
        params={"view": "BASIC", "tag_key": "jobgate.job", "tag_value": job_id},
        headers=headers(token),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    tasks: list[dict[str, Any]] = r.json().get("tasks", [])
    return tasks


def events(srv: Server, job_id: str, token: str | None = None) -> list[dict[str, Any]]:
    r = httpx.get(f"{srv.url}/api/v1/jobs/{job_id}/events", headers=headers(token), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    out: list[dict[str, Any]] = body["events"] if isinstance(body, dict) else body
    return out


def echo(text: str, **more: Any) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["echo", text]}], **more}


def sleeper(seconds: float, **more: Any) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["sleep", str(seconds)]}], **more}


class FlakyProxy:
    """Forwards to ``target`` (a jobgate's base URL), with faults: the next
    ``drop_creates`` creates reach the remote but their reply is lost (the proxy hangs
    up); until ``dark_until`` (monotonic) every other request is hung up on unforwarded."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.drop_creates = 0
        self.dark_until = 0.0
        self.hung_up = 0
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> httpx.Response:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                fwd = {"content-type": "application/json"}
                if self.headers.get("authorization"):
                    fwd["authorization"] = self.headers["authorization"]
                return httpx.request(
                    self.command, proxy.target + self.path, content=body or None, headers=fwd
                )

            def _hang_up(self) -> None:
                with lock:
                    proxy.hung_up += 1
                self.close_connection = True  # no answer at all

            def _reply(self, resp: httpx.Response) -> None:
                self.send_response(resp.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            def do_POST(self) -> None:
                with lock:
                    drop = proxy.drop_creates > 0 and self.path.endswith("/tasks")
                    if drop:
                        proxy.drop_creates -= 1
                if drop:
                    self._forward()
                    self._hang_up()
                elif time.monotonic() < proxy.dark_until:
                    self._hang_up()
                else:
                    self._reply(self._forward())

            def do_GET(self) -> None:
                if time.monotonic() < proxy.dark_until:
                    self._hang_up()
                else:
                    self._reply(self._forward())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
