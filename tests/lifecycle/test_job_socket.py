"""Heartbeats from a bubblewrap sandbox without network, through the job socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server, requires_bwrap
from tests.support import api_client, submit_job, wait_job

pytestmark = requires_bwrap

# Through the socket: its own heartbeat (204), then any other route (403), then the
# heartbeat route without the job token (403); then whether TCP is reachable (it is not).
BEAT = r"""
beat() { curl -s -o /dev/null -w '%{http_code}\n' --unix-socket "$JOBGATE_JOB_SOCKET" "$@"; }
beat -X PATCH -H "Authorization: Bearer $JOBGATE_JOB_TOKEN" \
  -H 'content-type: application/json' -d '{"load": 2.5, "app_status": "no network"}' \
  "http://jobgate$JOBGATE_JOB_PATH/heartbeat"
beat -H "Authorization: Bearer $JOBGATE_JOB_TOKEN" "http://jobgate/api/v1/jobs"
beat -X PATCH -H 'content-type: application/json' -d '{}' \
  "http://jobgate$JOBGATE_JOB_PATH/heartbeat"
curl -s -m 2 -o /dev/null "$JOBGATE_JOB_URL" || echo offline
sleep 1  # heartbeats are written in batches, while the job runs
"""


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"JOBGATE_RUNTIME": "bwrap", "JOBGATE_HEARTBEAT_FLUSH_INTERVAL": "0.2"}
    srv = Server(tmp_path_factory.mktemp("jobsocket") / "data", env).start()
    yield srv
    srv.stop()


def test_a_sandbox_without_network_reports_through_the_job_socket(isolated: Server) -> None:
    with api_client(isolated) as api:
        job_id = submit_job(api, script=BEAT, heartbeat_timeout=30)
        job = wait_job(api, job_id, timeout=60)
        assert job["state"] == "COMPLETE", job
        out = job["logs"][-1]["logs"][0]["stdout"].split()
        assert out == ["204", "403", "403", "offline"], job["logs"][-1]["logs"][0]
        assert job["heartbeat"]["load"] == 2.5
        assert job["heartbeat"]["from"] == f"job:{job_id}"
        assert job["app_status"] == "no network"
    socket = isolated.data_dir / "run" / "job.sock"
    assert oct(socket.stat().st_mode & 0o777) == "0o666"
    assert oct(socket.parent.stat().st_mode & 0o777) == "0o700"
    # The socket answers nothing but a job's own heartbeat, whoever connects.
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://jobgate") as raw:
        r = raw.get("/api/v1/jobs")
        assert r.status_code == 403 and r.json()["errors"][0]["where"] == "request"
        r = raw.patch(f"/api/v1/jobs/{job_id}/heartbeat", json={}, headers={"Authorization": "x"})
        assert r.status_code == 403
