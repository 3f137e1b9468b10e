"""FTP inputs and outputs against a real pyftpdlib server, through the py-tes client."""

from __future__ import annotations

import hashlib
from pathlib import Path

import tes

from tests.conftest import Server
from tests.staging.conftest import (
    FTP_PASSWORD,
    FTP_USER,
    S3,
    Ftp,
    outputs_log,
    stdout,
    storage_env,
    system_logs,
)
from tests.support import pytes_run, pytes_sh, uid


def test_ftp_file_in_and_out_with_credentials_in_the_url(client: tes.HTTPClient, ftp: Ftp) -> None:
    base = uid()
    (ftp.root / base).mkdir()
    (ftp.root / base / "in.txt").write_bytes(b"over ftp\n")
    out_url = ftp.url(f"{base}/new/dir/out.txt")  # parents are created
    task = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=ftp.url(f"{base}/in.txt"), path="/data/in.txt")],
            outputs=[tes.Output(url=out_url, path="/data/out.txt")],
            executors=[pytes_sh("cat data/in.txt; rev data/in.txt > data/out.txt")],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task) == "over ftp\n"
    assert (ftp.root / base / "new" / "dir" / "out.txt").read_bytes() == b"ptf revo\n"
    # The password never reaches the task's logs.
    [(path, url, size)] = outputs_log(task)
    assert (path, size) == ("/data/out.txt", "9")
    assert FTP_PASSWORD not in url and url == out_url.replace(FTP_PASSWORD, "***")


def test_ftp_directories_both_ways(client: tes.HTTPClient, ftp: Ftp) -> None:
    base = uid()
    src = ftp.root / base / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"A")
    (src / "sub" / "deeper" / "c.txt").write_bytes(b"CCC")
    task = pytes_run(
        client,
        tes.Task(
            inputs=[tes.Input(url=ftp.url(f"{base}/in"), path="/data/d", type="DIRECTORY")],
            outputs=[
                tes.Output(url=ftp.url(f"{base}/out"), path="/data/res", type="DIRECTORY"),
                tes.Output(
                    url=ftp.url(f"{base}/wild"), path="/data/res/*.txt", path_prefix="/data/res"
                ),
            ],
            executors=[
                pytes_sh(
                    "find data/d -type f | sort; mkdir -p data/res/s && "
                    "cat data/d/a.txt data/d/sub/deeper/c.txt > data/res/all.txt && "
                    "printf z > data/res/s/z.bin"
                )
            ],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task) == "data/d/a.txt\ndata/d/sub/deeper/c.txt\n"
    assert (ftp.root / base / "out" / "all.txt").read_bytes() == b"ACCC"
    assert (ftp.root / base / "out" / "s" / "z.bin").read_bytes() == b"z"
    assert (ftp.root / base / "wild" / "all.txt").read_bytes() == b"ACCC"
    assert not (ftp.root / base / "wild" / "s").exists()
    redacted = f"ftp://{FTP_USER}:***@127.0.0.1:{ftp.port}/{base}"
    assert outputs_log(task) == [
        ("/data/res/all.txt", f"{redacted}/out/all.txt", "4"),
        ("/data/res/all.txt", f"{redacted}/wild/all.txt", "4"),
        ("/data/res/s/z.bin", f"{redacted}/out/s/z.bin", "1"),
    ]


def test_ftp_credentials_from_settings(tmp_path: Path, s3: S3, ftp: Ftp, stage_dir: Path) -> None:
    base = uid()
    (ftp.root / base).mkdir()
    data = hashlib.sha256(b"ftp").digest() * 100_000  # 3.2 MB: several data blocks
    (ftp.root / base / "blob").write_bytes(data)
    srv = Server(
        tmp_path / "data",
        storage_env(
            s3, stage_dir, JOBGATE_FTP_USERNAME=FTP_USER, JOBGATE_FTP_PASSWORD=FTP_PASSWORD
        ),
    ).start()
    try:
        client = tes.HTTPClient(srv.url, timeout=30)
        task = pytes_run(
            client,
            tes.Task(
                inputs=[tes.Input(url=ftp.url(f"{base}/blob", creds=False), path="/data/b")],
                executors=[pytes_sh("sha256sum data/b")],
            ),
        )
    finally:
        srv.stop()
    assert task.state == "COMPLETE", system_logs(task)
    assert stdout(task).split()[0] == hashlib.sha256(data).hexdigest()


def test_missing_ftp_input_and_wrong_password(client: tes.HTTPClient, ftp: Ftp) -> None:
    missing = ftp.url(f"{uid()}/none.txt")
    wrong = f"ftp://{FTP_USER}:wrong@127.0.0.1:{ftp.port}/x.txt"
    for url, cause in [(missing, "not found"), (wrong, "530")]:
        task = pytes_run(
            client,
            tes.Task(inputs=[tes.Input(url=url, path="/data/x")], executors=[pytes_sh("true")]),
        )
        assert task.state == "SYSTEM_ERROR", url
        shown = url.replace(FTP_PASSWORD, "***").replace(":wrong@", ":***@")
        line = next((ln for ln in system_logs(task).splitlines() if shown in ln), "")
        assert cause in line, (url, system_logs(task))
        assert "wrong" not in system_logs(task)


def test_ftp_directory_output_with_many_files_in_parallel(client: tes.HTTPClient, ftp: Ftp) -> None:
    """Parallel uploads create the same remote directories at once; none may fail."""
    base = uid()
    script = "for d in a a/b a/b/c x x/y; do mkdir -p data/t/$d; " + (
        "for i in 1 2 3 4; do echo $d$i > data/t/$d/f$i; done; done"
    )
    task = pytes_run(
        client,
        tes.Task(
            outputs=[tes.Output(url=ftp.url(f"{base}/t"), path="/data/t", type="DIRECTORY")],
            executors=[pytes_sh(script)],
        ),
    )
    assert task.state == "COMPLETE", system_logs(task)
    uploaded = sorted(
        p.relative_to(ftp.root / base / "t").as_posix() for p in (ftp.root / base / "t").rglob("f*")
    )
    assert len(uploaded) == 20 and len(outputs_log(task)) == 20
    assert (ftp.root / base / "t" / "a" / "b" / "c" / "f3").read_text() == "a/b/c3\n"
