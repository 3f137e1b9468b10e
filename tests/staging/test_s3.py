"""S3 inputs and outputs against a real moto server, through the py-tes client."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import psutil
import tes

from tests.conftest import Server, free_port, wait_final
from tests.staging.conftest import S3, outputs_log, stdout, storage_env, system_logs
from tests.support import pytes_run, pytes_sh, uid


def test_s3_file_in_and_file_out(client: tes.HTTPClient, s3: S3) -> None:
    key = f"{uid()}/in.txt"
    s3.put(key, b"from s3\n")
    out_key = f"{uid()}/deep/out.txt"
    task = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=s3.url(key), path="/data/in.txt")],
            outputs=[tes.Output(url=s3.url(out_key), path="/data/out.txt")],
            executors=[pytes_sh("cat data/in.txt; tr a-z A-Z < data/in.txt > data/out.txt")],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task) == "from s3\n"
    assert s3.get(out_key) == b"FROM S3\n"
    assert outputs_log(task) == [("/data/out.txt", s3.url(out_key), "8")]


def test_s3_directories_both_ways(client: tes.HTTPClient, s3: S3) -> None:
    base = uid()
    s3.put(f"{base}/in/a.txt", b"A")
    s3.put(f"{base}/in/sub/b.txt", b"BB")
    s3.put(f"{base}/in-sibling/not-me.txt", b"x")  # shares the prefix, not the directory
    task = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=s3.url(f"{base}/in"), path="/data/d", type="DIRECTORY")],
            outputs=[tes.Output(url=s3.url(f"{base}/out"), path="/data/res", type="DIRECTORY")],
            executors=[
                pytes_sh(
                    "find data/d -type f | sort; mkdir -p data/res/x/y && "
                    "cp data/d/a.txt data/res/ && cat data/d/sub/b.txt > data/res/x/y/b2.txt"
                )
            ],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task) == "data/d/a.txt\ndata/d/sub/b.txt\n"
    assert s3.keys(f"{base}/out") == [f"{base}/out/a.txt", f"{base}/out/x/y/b2.txt"]
    assert s3.get(f"{base}/out/x/y/b2.txt") == b"BB"
    assert outputs_log(task) == [
        ("/data/res/a.txt", s3.url(f"{base}/out/a.txt"), "1"),
        ("/data/res/x/y/b2.txt", s3.url(f"{base}/out/x/y/b2.txt"), "2"),
    ]


def test_s3_wildcard_outputs_strip_path_prefix(client: tes.HTTPClient, s3: S3) -> None:
    base = uid()
    task = pytes_run(
        client,
        tes.Task(
            outputs=[
                tes.Output(url=s3.url(f"{base}/w/"), path="/data/*/r?.txt", path_prefix="/data/")
            ],
            executors=[
                pytes_sh(
                    "mkdir -p data/a data/b && printf 1 > data/a/r1.txt && "
                    "printf 22 > data/b/r2.txt && printf no > data/a/skip.log"
                )
            ],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert s3.keys(f"{base}/") == [f"{base}/w/a/r1.txt", f"{base}/w/b/r2.txt"]
    assert outputs_log(task) == [
        ("/data/a/r1.txt", s3.url(f"{base}/w/a/r1.txt"), "1"),
        ("/data/b/r2.txt", s3.url(f"{base}/w/b/r2.txt"), "2"),
    ]


def test_missing_s3_input_is_system_error_naming_the_url(client: tes.HTTPClient, s3: S3) -> None:
    url = s3.url(f"{uid()}/nope.txt")
    task = pytes_run(
        client, tes.Task(inputs=[tes.Input(url=url, path="/data/x")], executors=[pytes_sh("true")])
    )
    assert task.state == "SYSTEM_ERROR"
    line = next(line for line in system_logs(task).splitlines() if url in line)
    assert "not found" in line
    assert not any(tl.logs for tl in task.logs)  # nothing ran


def test_executor_error_with_a_missing_s3_output_stays_executor_error(
    client: tes.HTTPClient, s3: S3
) -> None:
    base = uid()
    task = pytes_run(
        client,
        tes.Task(
            outputs=[
                tes.Output(url=s3.url(f"{base}/log.txt"), path="/data/log.txt"),
                tes.Output(url=s3.url(f"{base}/missing"), path="/data/missing"),
            ],
            executors=[pytes_sh("echo partial > data/log.txt; exit 3")],
        ),
    )
    assert task.state == "EXECUTOR_ERROR"
    assert s3.get(f"{base}/log.txt") == b"partial\n"  # what exists is still delivered
    assert "/data/missing" in system_logs(task)


def test_unreachable_s3_store_is_system_error(tmp_path: Path, s3: S3, stage_dir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    srv = Server(
        tmp_path / "data",
        storage_env(s3, stage_dir, JOBGATE_S3_ENDPOINT_URL=dead, JOBGATE_STAGING_ATTEMPTS="2"),
    ).start()
    try:
        client = tes.HTTPClient(srv.url, timeout=30)
        url = s3.url("any/key.txt")
        task = pytes_run(
            client,
            tes.Task(inputs=[tes.Input(url=url, path="/data/x")], executors=[pytes_sh("true")]),
        )
    finally:
        srv.stop()
    assert task.state == "SYSTEM_ERROR"
    line = next(line for line in system_logs(task).splitlines() if url in line)
    assert "gave up after 2 attempts" in line, line


def test_s3_large_file_round_trip_is_intact(client: tes.HTTPClient, s3: S3) -> None:
    """Several chunks (8 MiB each) and a multipart upload, checked byte for byte."""
    data = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32 + 7)  # ~20 MiB
    key = f"{uid()}/big.bin"
    s3.put(key, data)
    task = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=s3.url(key), path="/data/big.bin")],
            outputs=[tes.Output(url=s3.url(key + ".out"), path="/data/big.bin")],
            executors=[pytes_sh("sha256sum data/big.bin")],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task).split()[0] == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(s3.get(key + ".out")).hexdigest() == hashlib.sha256(data).hexdigest()


def test_s3_types_are_inferred_when_the_client_omits_them(stage_server: Server, s3: S3) -> None:
    """py-tes always sends a type; a plain JSON client may leave it out."""
    base = uid()
    s3.put(f"{base}/d/f.txt", b"f")
    s3.put(f"{base}/file.txt", b"g")
    with httpx.Client(base_url=stage_server.url + "/ga4gh/tes/v1", timeout=30) as api:
        task_id = api.post(
            "/tasks",
            json={
                "inputs": [
                    {"url": s3.url(f"{base}/d"), "path": "/data/d"},
                    {"url": s3.url(f"{base}/file.txt"), "path": "/data/f"},
                ],
                "outputs": [{"url": s3.url(f"{base}/o"), "path": "/data/d"}],
                "executors": [{"image": "alpine", "command": ["cat", "/data/d/f.txt"]}],
            },
        ).json()["id"]
        task = wait_final(api, task_id)
    assert task["state"] == "COMPLETE", task
    assert [i["type"] for i in task["inputs"]] == ["DIRECTORY", "FILE"]
    assert task["outputs"][0]["type"] == "DIRECTORY"
    assert s3.keys(f"{base}/o") == [f"{base}/o/f.txt"]


def test_s3_transfers_stream_in_bounded_memory(
    client: tes.HTTPClient, stage_server: Server, s3: S3
) -> None:
    """128 MiB in from S3 and back out: the gateway's memory grows by well under the file
    size (chunks of 8 MiB, not the whole file). bench/staging_bench.py measures 1 GiB."""
    assert stage_server.proc is not None
    gateway = psutil.Process(stage_server.proc.pid)
    s3.put("warm-up", b"w")  # the first S3 use loads botocore & co. once: not measured
    warm = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=s3.url("warm-up"), path="/w")], executors=[pytes_sh("true")]
        ),
    )
    assert warm.state == "COMPLETE", system_logs(warm)

    size = 128 * 1024 * 1024
    key = f"{uid()}/stream.bin"
    s3.put(key, hashlib.sha256(b"stream").digest() * (size // 32))
    peak = before = gateway.memory_info().rss
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, gateway.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        task = pytes_run(
            client,
            tes.Task(
                inputs=[tes.Input(url=s3.url(key), path="/data/s.bin")],
                outputs=[tes.Output(url=s3.url(key + ".out"), path="/data/s.bin")],
                executors=[pytes_sh("true")],
            ),
        )
    finally:
        stop.set()
        sampler.join()
    assert task.state == "COMPLETE", system_logs(task)
    assert outputs_log(task)[0][2] == str(size)
    assert peak - before < size // 2, f"RSS grew by {(peak - before) >> 20} MiB"
