"""Uploads into held jobs, sandboxes and output sandboxes, through a real server.

The server's limits are small (64 KiB) so the 413 paths are cheap to reach. Scripts
``cd "${JOBGATE_TASK_ROOT:-/}"`` first, so relative paths mean container paths under
both runtimes.
"""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.staging.archives import cve_2025_4517, member, tarball
from tests.support import run_job, submit_job, wait_job

LIMIT = 64 * 1024
UNPACK_LIMIT = 4 * 1024 * 1024
CD = 'cd "${JOBGATE_TASK_ROOT:-/}" && '


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's server (small upload and sandbox limits), in place of the session's:
    the ``api`` and ``tes`` fixtures use it."""
    srv = Server(
        tmp_path_factory.mktemp("files") / "data",
        {
            "JOBGATE_SANDBOX_MAX_BYTES": str(LIMIT),
            "JOBGATE_UPLOAD_MAX_BYTES": str(LIMIT),
            "JOBGATE_SANDBOX_EXTRACT_MAX_BYTES": str(UNPACK_LIMIT),
            "JOBGATE_SANDBOX_EXTRACT_MAX_FILES": "50",
            # "token" as well, so the data dir holds an admin token for the escape tests
            # to aim at; "none" keeps these tests free of credentials.
            "JOBGATE_AUTH": "token,none",
        },
    ).start()
    yield srv
    srv.stop()


def stdout(job: dict[str, Any]) -> str:
    return str(job["logs"][-1]["logs"][0]["stdout"])


def system_logs(job: dict[str, Any]) -> str:
    return "\n".join(job["logs"][-1].get("system_logs") or [])


def upload_sandbox(api: httpx.Client, content: bytes) -> dict[str, Any]:
    r = api.post("/sandboxes", content=content)
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


# -- create → upload → start -------------------------------------------------------------


def test_hold_upload_start_the_job_sees_its_files(api: httpx.Client, server: Server) -> None:
    job_id = submit_job(
        api,
        script=CD + "cat data/in.txt cfg/deep/params.json; test ! -e in.txt && echo ok",
        hold=True,
        inputs=[{"path": "/data/declared.txt", "content": "declared"}],
    )
    assert api.get(f"/jobs/{job_id}").json()["state"] == "PAUSED"
    r = api.put(f"/jobs/{job_id}/files/data/in.txt", content=b"uploaded data\n")
    assert r.status_code == 201, r.text
    assert r.json() == {
        "path": "/data/in.txt",
        "size": 14,
        "sha256": hashlib.sha256(b"uploaded data\n").hexdigest(),
    }

    def chunks() -> Iterator[bytes]:  # a streamed (chunked) body
        yield b'{"alpha": '
        yield b"1}\n"

    r = api.put(f"/jobs/{job_id}/files/cfg/deep/params.json", content=chunks())
    assert r.status_code == 201, r.text
    # Uploading the same path again replaces the file (200).
    r = api.put(f"/jobs/{job_id}/files/data/in.txt", content=b"uploaded data v2\n")
    assert r.status_code == 200
    assert api.get(f"/jobs/{job_id}/files").json() == {
        "files": [
            {"path": "/cfg/deep/params.json", "size": 13},
            {"path": "/data/in.txt", "size": 17},
        ]
    }
    assert api.post(f"/jobs/{job_id}/start").status_code == 200
    job = wait_job(api, job_id)
    assert job["state"] == "COMPLETE", system_logs(job)
    assert stdout(job) == 'uploaded data v2\n{"alpha": 1}\nok\n'

    # Uploads are refused once the job is no longer held, and go with the job.
    r = api.put(f"/jobs/{job_id}/files/data/late.txt", content=b"late")
    assert r.status_code == 409 and "held" in r.json()["message"]
    assert (server.data_dir / "uploads" / job_id).is_dir()
    assert api.delete(f"/jobs/{job_id}").status_code == 204
    assert not (server.data_dir / "uploads" / job_id).exists()


def test_uploaded_file_comes_before_declared_inputs(api: httpx.Client) -> None:
    job_id = submit_job(
        api,
        script=CD + "cat data/x.txt",
        hold=True,
        inputs=[{"path": "/data/x.txt", "content": "from the input\n"}],
    )
    api.put(f"/jobs/{job_id}/files/data/x.txt", content=b"from the upload\n")
    api.post(f"/jobs/{job_id}/start")
    assert stdout(wait_job(api, job_id)) == "from the input\n"


def test_upload_to_a_job_that_is_not_held_is_409(api: httpx.Client) -> None:
    job_id = submit_job(api, script="true")
    r = api.put(f"/jobs/{job_id}/files/a.txt", content=b"x")
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    assert api.put("/jobs/no-such-job/files/a.txt", content=b"x").status_code == 404
    assert api.get("/jobs/no-such-job/files").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "%2E%2E/%2E%2E/etc/passwd",  # ../../etc/passwd, encoded so no client normalises it
        "..%2Fescape.txt",
        "a/%2E%2E/%2E%2E/b",
        "/etc/passwd",  # //etc/passwd: an absolute path
        "a//b",
        "a/%2E/b",
        "a/%00b",
    ],
)
def test_upload_path_escapes_are_400(api: httpx.Client, server: Server, path: str) -> None:
    job_id = submit_job(api, script="true", hold=True)
    url = httpx.URL(f"{server.url}/api/v1/jobs/{job_id}/files/").copy_with(
        raw_path=f"/api/v1/jobs/{job_id}/files/{path}".encode()
    )
    r = api.put(url, content=b"evil")
    assert r.status_code == 400, (path, r.text)
    assert r.json()["code"] == "invalid_request"
    assert api.get(f"/jobs/{job_id}/files").json() == {"files": []}


def test_upload_over_the_limit_is_413(api: httpx.Client, server: Server) -> None:
    job_id = submit_job(api, script="true", hold=True)
    r = api.put(f"/jobs/{job_id}/files/big.bin", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413 and r.json()["code"] == "too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"y" * (LIMIT // 4)

    r = api.put(f"/jobs/{job_id}/files/big.bin", content=chunks())
    assert r.status_code == 413
    assert api.get(f"/jobs/{job_id}/files").json() == {"files": []}
    assert list((server.data_dir / "uploads" / ".partial").iterdir()) == []


def test_upload_over_an_existing_file_or_dir_conflicts(api: httpx.Client) -> None:
    job_id = submit_job(api, script="true", hold=True)
    assert api.put(f"/jobs/{job_id}/files/a/b.txt", content=b"1").status_code == 201
    assert api.put(f"/jobs/{job_id}/files/a", content=b"2").status_code == 409
    assert api.put(f"/jobs/{job_id}/files/a/b.txt/c", content=b"3").status_code == 409


# -- sandboxes ---------------------------------------------------------------------------


def test_sandbox_dedup_download_and_head(api: httpx.Client, server: Server) -> None:
    content = b"sandbox content " + str(time.time_ns()).encode()
    sha = hashlib.sha256(content).hexdigest()
    r = api.post("/sandboxes", content=content)
    assert r.status_code == 201
    assert r.json() == {
        "sha256": sha,
        "size": len(content),
        "url": f"sandbox:{sha}",
        "existed": False,
    }
    assert r.headers["location"] == f"/api/v1/sandboxes/{sha}"
    r = api.post("/sandboxes", content=iter([content[:5], content[5:]]))
    assert r.status_code == 200 and r.json()["existed"] is True and r.json()["sha256"] == sha
    stored = [p.name for p in (server.data_dir / "sandboxes").iterdir() if p.name == sha]
    assert stored == [sha]

    r = api.get(f"/sandboxes/{sha}")
    assert r.status_code == 200 and r.content == content
    r = api.head(f"/sandboxes/{sha}")
    assert r.status_code == 200 and r.headers["content-length"] == str(len(content))
    assert api.head(f"/sandboxes/{'0' * 64}").status_code == 404
    r = api.get(f"/sandboxes/{'0' * 64}")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert api.get("/sandboxes/not-a-sha").status_code == 404


def test_sandbox_over_the_limit_is_413(api: httpx.Client, server: Server) -> None:
    r = api.post("/sandboxes", content=b"z" * (LIMIT + 1))
    assert r.status_code == 413
    body = r.json()
    assert body["code"] == "too_large" and str(LIMIT) in body["message"]

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"z" * (LIMIT // 2)

    assert api.post("/sandboxes", content=chunks()).status_code == 413
    assert list((server.data_dir / "sandboxes" / ".partial").iterdir()) == []
    # Exactly the limit is fine.
    assert api.post("/sandboxes", content=b"q" * LIMIT).status_code in (200, 201)


def test_tarball_and_file_sandboxes_as_inputs(api: httpx.Client) -> None:
    tgz = tarball(
        [
            member("dir", type=tarfile.DIRTYPE, mode=0o755),
            member("dir/a.txt", b"A\n"),
            member("b.txt", b"B\n"),
            member("run.sh", b"echo script ran\n", mode=0o755),
            member("link", type=tarfile.SYMTYPE, linkname="dir/a.txt"),  # inside: allowed
        ]
    )
    plain_tar = tarball([member("p.txt", b"P\n")], mode="w")
    tgz_sha = upload_sandbox(api, tgz)["sha256"]
    tar_sha = upload_sandbox(api, plain_tar)["sha256"]
    file_sha = upload_sandbox(api, b"just a file\n")["sha256"]
    job = run_job(
        api,
        script=CD + "cat src/dir/a.txt src/b.txt src/link plain/p.txt one/file.txt; "
        "sh src/run.sh; tar tzf raw.tgz | sort | head -1",
        inputs=[
            {"url": f"sandbox:{tgz_sha}", "path": "/src"},
            {"url": f"sandbox://{tar_sha}", "path": "/plain"},
            {"url": f"sandbox:{file_sha}", "path": "/one/file.txt"},
            # type FILE: a tarball placed as it is, not extracted
            {"url": f"sandbox:{tgz_sha}", "path": "/raw.tgz", "type": "FILE"},
        ],
    )
    assert job["state"] == "COMPLETE", system_logs(job)
    assert stdout(job) == "A\nB\nA\nP\njust a file\nscript ran\nb.txt\n"
    types = [i["type"] for i in job["spec"]["inputs"]]
    assert types == ["DIRECTORY", "DIRECTORY", "FILE", "FILE"]


def test_missing_or_malformed_sandbox_input_fails_staging(api: httpx.Client) -> None:
    job = run_job(api, script="true", inputs=[{"url": f"sandbox:{'1' * 64}", "path": "/x"}])
    assert job["state"] == "SYSTEM_ERROR" and "no such sandbox" in system_logs(job)
    job = run_job(api, script="true", inputs=[{"url": "sandbox:nope", "path": "/x"}])
    assert job["state"] == "SYSTEM_ERROR" and "sandbox:<sha256>" in system_logs(job)
    file_sha = upload_sandbox(api, b"not a tarball")["sha256"]
    job = run_job(
        api,
        script="true",
        inputs=[{"url": f"sandbox:{file_sha}", "path": "/x", "type": "DIRECTORY"}],
    )
    assert job["state"] == "SYSTEM_ERROR" and "not a tarball" in system_logs(job)


def plant_sandbox(server: Server, content: bytes) -> str:
    """Store ``content`` as a sandbox behind the API's back, as one uploaded before the
    upload check existed: staging must refuse it on its own."""
    sha = hashlib.sha256(content).hexdigest()
    (server.data_dir / "sandboxes").mkdir(exist_ok=True)
    (server.data_dir / "sandboxes" / sha).write_bytes(content)
    return sha


def refused_upload(api: httpx.Client, content: bytes) -> dict[str, Any]:
    r = api.post("/sandboxes", content=content)
    assert r.status_code == 400, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == "invalid_request"
    return body


# Files the running server rewrites itself (webhook delivery moves the cursor while other
# tests on the shared server run); their mode and link count are still compared.
_LIVE_FILES = {"webhooks.cursor"}


def data_dir_secrets(server: Server) -> dict[str, tuple[bytes | None, int, int]]:
    """Content, mode and link count of the data dir's own files (the database aside)."""
    return {
        p.name: (
            None if p.name in _LIVE_FILES else p.read_bytes(),
            stat.S_IMODE(p.lstat().st_mode),
            p.lstat().st_nlink,
        )
        for p in server.data_dir.iterdir()
        if p.is_file() and not p.name.startswith("jobgate.db")
    }


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([member("../evil.txt", b"evil")], "outside the destination"),
        ([member("ok/../../evil.txt", b"evil")], "outside the destination"),
        ([member("esc", type=tarfile.SYMTYPE, linkname="/etc/passwd")], "absolute"),
        ([member("esc", type=tarfile.SYMTYPE, linkname="../../../../etc")], "outside"),
        ([member("hard", type=tarfile.LNKTYPE, linkname="/etc/passwd")], "absolute"),
        ([member("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)], "special file"),
    ],
)
def test_malicious_tarball_is_refused(
    api: httpx.Client, server: Server, members: list[Any], why: str
) -> None:
    content = tarball(members)
    body = refused_upload(api, content)
    name = members[0][0].name
    assert body["errors"][0]["where"] == f"body: member {name!r}"
    assert why in body["errors"][0]["what"] and name in body["message"]
    sha = hashlib.sha256(content).hexdigest()
    assert api.head(f"/sandboxes/{sha}").status_code == 404
    assert list((server.data_dir / "sandboxes" / ".partial").iterdir()) == []
    # Stored anyway (by an older version): staging refuses it.
    plant_sandbox(server, content)
    job = run_job(api, script="true", inputs=[{"url": f"sandbox:{sha}", "path": "/in/x"}])
    assert job["state"] == "SYSTEM_ERROR"
    assert f"unsafe tarball refused: member {name!r}" in system_logs(job)
    assert why in system_logs(job)
    assert not list(server.data_dir.rglob("evil.txt"))


def test_cve_2025_4517_tarball_cannot_reach_the_data_dir(api: httpx.Client, server: Server) -> None:
    # dest is <data>/jobs/<id>/root/in/x: five levels below the data dir, where the
    # archive's hard link aims at the admin token and then writes over it.
    assert "admin-token" in data_dir_secrets(server)
    before = data_dir_secrets(server)
    content = tarball(cve_2025_4517(levels_up=5, target="admin-token"))
    body = refused_upload(api, content)
    assert body["errors"][0]["where"].startswith("body: member 'a/b/c/")
    assert "through the symlink 'a'" in body["errors"][0]["what"]

    sha = plant_sandbox(server, content)
    job = run_job(api, script="true", inputs=[{"url": f"sandbox:{sha}", "path": "/in/x"}])
    assert job["state"] == "SYSTEM_ERROR"
    logs = system_logs(job)
    assert "unsafe tarball refused: member 'a/b/c/" in logs, logs
    assert "through the symlink 'a'" in logs
    assert data_dir_secrets(server) == before
    for name in ("flaglink", "escape", "d" * 247):
        assert not list(server.data_dir.rglob(name)), name


def test_tarball_bombs_are_refused_before_unpacking(api: httpx.Client, server: Server) -> None:
    # 2x the unpack limit of zeros gzips to a few KiB: well under the sandbox size limit.
    # The limit is crossed by the last member: nothing of the first ones is written either.
    half = bytes(UNPACK_LIMIT // 2)
    bomb = tarball([member(f"zeros{i}.bin", half) for i in range(4)])
    assert len(bomb) < LIMIT
    body = refused_upload(api, bomb)
    assert body["errors"] == [
        {
            "where": "body: member 'zeros2.bin'",
            "what": f"the tarball unpacks to more than {UNPACK_LIMIT} bytes",
        }
    ]
    sha = plant_sandbox(server, bomb)
    job = run_job(api, script="true", inputs=[{"url": f"sandbox:{sha}", "path": "/in/x"}])
    assert job["state"] == "SYSTEM_ERROR"
    assert f"unpacks to more than {UNPACK_LIMIT} bytes" in system_logs(job)
    assert not list(server.data_dir.rglob("zeros*.bin"))

    many = tarball([member(f"f{i}.txt", b"x") for i in range(60)])
    assert "more than 50 entries" in refused_upload(api, many)["message"]
    sha = plant_sandbox(server, many)
    job = run_job(api, script="true", inputs=[{"url": f"sandbox:{sha}", "path": "/in/y"}])
    assert job["state"] == "SYSTEM_ERROR"
    assert "more than 50 entries" in system_logs(job)
    assert not list(server.data_dir.rglob("f0.txt"))

    # Within both limits the same shapes unpack.
    ok = tarball([member("zeros.bin", half), member("a.txt", b"a")])
    sha = upload_sandbox(api, ok)["sha256"]
    job = run_job(
        api,
        script="wc -c < /in/z/zeros.bin",
        inputs=[{"url": f"sandbox:{sha}", "path": "/in/z"}],
    )
    assert job["state"] == "COMPLETE", system_logs(job)
    assert stdout(job).strip() == str(UNPACK_LIMIT // 2)


def test_an_unreadable_tarball_is_refused_at_upload(api: httpx.Client) -> None:
    cut = tarball([member("big", bytes(30_000))], mode="w")[:20_000]
    body = refused_upload(api, cut)
    assert "cannot be read" in body["message"] and body["errors"][0]["where"] == "body"


def test_absolute_tarball_members_are_neutralised(api: httpx.Client) -> None:
    sha = upload_sandbox(api, tarball([member("/abs.txt", b"inside\n")]))["sha256"]
    job = run_job(
        api,
        script=CD + "cat in/abs.txt; test ! -e abs.txt && echo not-at-root",
        inputs=[{"url": f"sandbox:{sha}", "path": "/in"}],
    )
    assert job["state"] == "COMPLETE", system_logs(job)
    assert stdout(job) == "inside\nnot-at-root\n"


# -- output sandboxes --------------------------------------------------------------------


def test_output_sandbox_holds_the_declared_outputs(api: httpx.Client, tmp_path: Path) -> None:
    secret = tmp_path / "host.txt"
    secret.write_text("host file\n")
    job = run_job(
        api,
        script=CD + "echo a > out/a.txt; echo b > out/b.txt; echo skip > out/skip.log; "
        "mkdir -p out/res/sub; echo c > out/res/sub/c.dat; "
        f"ln -s {secret} out/link.txt; ln -s a.txt out/alias.txt; ln -s /etc out/res/etc",
        output_sandbox=["/out/*.txt", "/out/res", "/missing/*.x"],
    )
    assert job["state"] == "COMPLETE", system_logs(job)
    assert "nothing matched /missing/*.x" in system_logs(job)
    r = api.get(f"/jobs/{job['id']}/output-sandbox")
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    sha = r.headers["x-sandbox-sha256"]
    assert hashlib.sha256(r.content).hexdigest() == sha
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
        links = [m.name for m in tar if m.issym() or m.islnk()]
    # Symlinks (to a host file, or inside the task) are left out; so is what no pattern
    # names.
    assert files == {"out/a.txt": b"a\n", "out/b.txt": b"b\n", "out/res/sub/c.dat": b"c\n"}
    assert links == []
    # It is a sandbox like any other: downloadable, and usable as the next job's input.
    assert api.get(f"/sandboxes/{sha}").content == r.content
    nxt = run_job(
        api,
        script=CD + "cat prev/out/a.txt prev/out/res/sub/c.dat",
        inputs=[{"url": f"sandbox:{sha}", "path": "/prev"}],
    )
    assert stdout(nxt) == "a\nc\n"


def test_output_sandbox_missing_is_404_with_a_reason(api: httpx.Client) -> None:
    job = run_job(api, script="true")
    r = api.get(f"/jobs/{job['id']}/output-sandbox")
    assert r.status_code == 404 and "no output sandbox" in r.json()["message"]
    job = run_job(api, script="true", output_sandbox=["/nothing/here"])
    assert job["state"] == "COMPLETE"
    assert api.get(f"/jobs/{job['id']}/output-sandbox").status_code == 404
    assert api.get("/jobs/no-such-job/output-sandbox").status_code == 404


def test_output_sandbox_over_the_limit_fails_the_job(api: httpx.Client, server: Server) -> None:
    job = run_job(
        api,
        script=CD + f"head -c {4 * LIMIT} /dev/urandom > out/big.bin",
        output_sandbox=["/out/big.bin"],
    )
    assert job["state"] == "SYSTEM_ERROR"
    assert "output_sandbox not kept: the archive exceeds the limit" in system_logs(job)
    assert api.get(f"/jobs/{job['id']}/output-sandbox").status_code == 404
    assert list((server.data_dir / "sandboxes" / ".partial").iterdir()) == []


def test_output_sandbox_paths_are_validated(api: httpx.Client) -> None:
    r = api.post("/jobs", json={"script": "true", "output_sandbox": ["relative/path"]})
    assert r.status_code == 400
    r = api.post("/jobs", json={"script": "true", "output_sandbox": ["/a/../../etc"]})
    assert r.status_code == 400
