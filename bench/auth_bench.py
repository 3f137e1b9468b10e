"""What authentication costs per request: the same GET under each JOBGATE_AUTH mode.

Starts one ``jobgate serve`` per mode (none, service token, OIDC against a local issuer,
basic), sends N sequential keep-alive ``GET /ga4gh/tes/v1/tasks/{id}`` with that mode's
credential, and prints latency (median, p95) and server CPU per request.

    .venv/bin/python bench/auth_bench.py [-n 2000]
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tes_bench import ms, pct, running

# The OIDC issuer and users-file helpers of the tests (a real issuer over HTTP).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.auth.conftest import add_basic_user
from tests.auth.issuer import Issuer

TASK = {"executors": [{"image": "alpine", "command": ["true"]}]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="requests per mode")
    args = ap.parse_args(argv)
    issuer = Issuer()
    root = Path(tempfile.mkdtemp(prefix="jobgate-auth-bench-"))
    users = root / "users"
    add_basic_user(users, "carol", "carol-pw")
    env = {
        "JOBGATE_AUTH": "oidc,token,basic",
        "JOBGATE_OIDC_ISSUERS": issuer.url,
        "JOBGATE_OIDC_AUDIENCE": "jobgate",
        "JOBGATE_BASIC_USERS_FILE": str(users),
        "JOBGATE_RUNTIME": "process",
    }
    rows = []
    for mode in ("none", "token", "oidc", "basic"):
        mode_env = {"JOBGATE_AUTH": "none"} if mode == "none" else env
        with running(root / mode, mode_env) as srv:
            headers: dict[str, str] = {}
            if mode == "token":
                admin = (srv.data_dir / "admin-token").read_text().strip()
                headers = {"Authorization": f"Bearer {admin}"}
            elif mode == "oidc":
                headers = {"Authorization": f"Bearer {issuer.token('alice', lifetime=3600)}"}
            elif mode == "basic":
                pair = base64.b64encode(b"carol:carol-pw").decode()
                headers = {"Authorization": f"Basic {pair}"}
            with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as c:
                task_id = c.post("/ga4gh/tes/v1/tasks", json=TASK).json()["id"]
                path = f"/ga4gh/tes/v1/tasks/{task_id}"
                for _ in range(50):  # warm up (JWKS fetch, bcrypt check, caches)
                    assert c.get(path).status_code == 200
                lat = []
                cpu0 = srv.own_cpu()
                for _ in range(args.n):
                    t0 = time.perf_counter()
                    r = c.get(path)
                    lat.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                cpu = (srv.own_cpu() - cpu0) / args.n
            rows.append((mode, pct(lat, 50), pct(lat, 95), cpu))
    issuer.close()
    print(f"\nGET /ga4gh/tes/v1/tasks/{{id}}, {args.n} sequential keep-alive requests per mode\n")
    print(f"{'mode':<8} {'median':>10} {'p95':>10} {'server CPU/req':>16}")
    for mode, p50, p95, cpu in rows:
        print(f"{mode:<8} {ms(p50):>10} {ms(p95):>10} {ms(cpu):>16}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
