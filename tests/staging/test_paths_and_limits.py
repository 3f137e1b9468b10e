"""Paths that would leave a task's sandbox, size limits, schemes, service-info.storage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tes

from tests.conftest import Server
from tests.staging.conftest import S3, storage_env, system_logs
from tests.support import pytes_run, pytes_sh, uid


def _task(**parts: Any) -> tes.Task:
    return tes.Task(executors=parts.pop("executors", [pytes_sh("true")]), **parts)


@pytest.mark.parametrize(
    ("task", "where"),
    [
        (_task(inputs=[tes.Input(content="x", path="/data/../../etc/x")]), "inputs[0].path"),
        (_task(outputs=[tes.Output(url="s3://b/k", path="/data/../..")]), "outputs[0].path"),
        (
            _task(executors=[tes.Executor(image="a", command=["true"], workdir="/w/../..")]),
            "executors[0].workdir",
        ),
        (
            _task(executors=[tes.Executor(image="a", command=["true"], stdout="/o/../../x")]),
            "executors[0].stdout",
        ),
        (_task(volumes=["/v/../../.."]), "volumes"),
        (_task(inputs=[tes.Input(content="x", path="relative/x")]), "inputs[0].path"),
    ],
)
def test_paths_escaping_the_sandbox_are_refused_at_create(
    client: tes.HTTPClient, task: tes.Task, where: str
) -> None:
    with pytest.raises(requests.HTTPError) as info:
        client.create_task(task)
    response = info.value.response
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400 and body["code"] and body["message"]
    assert any(where in e["where"] for e in body["errors"]), body


def test_store_names_with_dot_dot_cannot_steer_a_download(client: tes.HTTPClient, s3: S3) -> None:
    base = uid()
    s3.put(f"{base}/d/ok.txt", b"ok")
    s3.put(f"{base}/d/../../../../../../tmp/jg-escape-{base}", b"planted")
    task = pytes_run(
        client,
        _task(
            inputs=[tes.Input(url=s3.url(f"{base}/d"), path="/data/d", type="DIRECTORY")],
        ),
    )
    assert task.state == "SYSTEM_ERROR"
    assert "unsafe name" in system_logs(task)
    assert not Path(f"/tmp/jg-escape-{base}").exists()


def test_a_symlink_in_an_input_directory_cannot_lead_out(
    client: tes.HTTPClient, stage_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(f"secret-{uid()}")
    src = stage_dir / uid()
    src.mkdir()
    (src / "fine.txt").write_text("fine")
    (src / "link.txt").symlink_to(secret)
    task = pytes_run(
        client,
        _task(
            inputs=[tes.Input(url=src.as_uri(), path="/data/d", type="DIRECTORY")],
            executors=[pytes_sh("cat data/d/*")],
        ),
    )
    assert task.state == "SYSTEM_ERROR"
    assert "outside the allowed directories" in system_logs(task)
    assert "secret-" not in str(task)


def test_unsupported_scheme_is_accepted_and_fails_at_staging(client: tes.HTTPClient) -> None:
    url = f"gs://bucket-{uid()}/key"
    task = pytes_run(client, _task(inputs=[tes.Input(url=url, path="/data/x")]))
    assert task.state == "SYSTEM_ERROR"
    line = next(ln for ln in system_logs(task).splitlines() if url in ln)
    assert "unsupported URL scheme 'gs'" in line and "s3" in line and "ftp" in line


def test_inline_content_of_128_kib_is_accepted(client: tes.HTTPClient) -> None:
    content = "z" * (128 * 1024)
    task = pytes_run(
        client,
        _task(
            inputs=[tes.Input(content=content, path="/data/c")],
            executors=[pytes_sh("wc -c < data/c")],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert task.logs[0].logs[0].stdout.strip() == str(128 * 1024)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, s3: S3, stage_dir: Path) -> Iterator[Server]:
    env = storage_env(
        s3,
        stage_dir,
        JOBGATE_STAGING_MAX_TASK_BYTES="10000",
        JOBGATE_MAX_CONTENT_BYTES=str(128 * 1024),
    )
    srv = Server(tmp_path_factory.mktemp("limited") / "data", env).start()
    yield srv
    srv.stop()


def test_per_task_transfer_limit(limited: Server, s3: S3) -> None:
    client = tes.HTTPClient(limited.url, timeout=30)
    base = uid()
    s3.put(f"{base}/a", b"a" * 6000)
    s3.put(f"{base}/b", b"b" * 6000)
    one = pytes_run(client, _task(inputs=[tes.Input(url=s3.url(f"{base}/a"), path="/data/a")]))
    assert one.state == "COMPLETE", system_logs(one)
    both = pytes_run(
        client,
        _task(
            inputs=[
                tes.Input(url=s3.url(f"{base}/a"), path="/data/a"),
                tes.Input(url=s3.url(f"{base}/b"), path="/data/b"),
            ]
        ),
    )
    assert both.state == "SYSTEM_ERROR"
    assert "transfer limit of 10000 bytes" in system_logs(both)
    out = pytes_run(
        client,
        _task(
            outputs=[tes.Output(url=s3.url(f"{base}/big"), path="/data/big")],
            executors=[pytes_sh("head -c 20000 /dev/zero > data/big")],
        ),
    )
    assert out.state == "SYSTEM_ERROR"
    assert "transfer limit" in system_logs(out)
    assert s3.keys(f"{base}/big") == []  # no truncated object left behind


def test_inline_content_over_the_limit_is_400(limited: Server) -> None:
    client = tes.HTTPClient(limited.url, timeout=30)
    with pytest.raises(requests.HTTPError) as info:
        client.create_task(_task(inputs=[tes.Input(content="z" * (128 * 1024 + 1), path="/c")]))
    assert info.value.response.status_code == 400
    assert "inputs[0].content" in info.value.response.text


def test_service_info_lists_the_storage(client: tes.HTTPClient, stage_dir: Path) -> None:
    storage = client.get_service_info().storage
    assert stage_dir.resolve().as_uri() in storage
    assert {"s3://", "ftp://", "http://", "https://"} <= set(storage)
