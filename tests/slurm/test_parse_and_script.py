"""Parsers over captured Slurm output, the states table, and batch script generation.

The captured texts were printed by Slurm 22.05 (Debian 12) on the test cluster.
"""

from __future__ import annotations

import shlex
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobgate.backends.batch.scheduler import script_body
from jobgate.backends.slurm import parse, script
from jobgate.backends.slurm.states import TABLE, lookup
from jobgate.domain.models import Job
from jobgate.domain.states import FINAL, State

SQUEUE = """\
1|FAILED|NonZeroExitCode
2|PENDING|Resources
3_0|COMPLETED|None
3_1|RUNNING|None
3_[2-4,7]|PENDING|Priority
7|TIMEOUT|TimeLimit
"""


def test_sbatch_parsable_id() -> None:
    assert parse.sbatch_id("42\n") == "42"
    assert parse.sbatch_id("42;cluster2\n") == "42"
    with pytest.raises(parse.ParseError):
        parse.sbatch_id("Submitted batch job 42\n")
    with pytest.raises(parse.ParseError):
        parse.sbatch_id("")


def test_squeue_status_expands_pending_array_ranges() -> None:
    got = parse.squeue_status(SQUEUE)
    assert sorted(got) == ["1", "2", "3_0", "3_1", "3_2", "3_3", "3_4", "3_7", "7"]
    assert got["1"] == parse.QueueEntry("1", "FAILED", "NonZeroExitCode")
    assert got["3_7"].state == "PENDING" and got["3_7"].reason == "Priority"
    assert got["7"].reason == "TimeLimit"
    with pytest.raises(parse.ParseError):
        parse.squeue_status("garbage line\n")


def test_squeue_names_keep_pipes_in_names() -> None:
    rows = parse.squeue_names("5|RUNNING|jg-abc\n6_[0-1]|PENDING|odd|name\n")
    assert rows == [
        ("5", "RUNNING", "jg-abc"),
        ("6_0", "PENDING", "odd|name"),
        ("6_1", "PENDING", "odd|name"),
    ]
    assert parse.expand_ids("9_[1-2%4]") == ["9_1", "9_2"]


@pytest.mark.parametrize(
    ("stderr", "transient", "rate", "message"),
    [
        (
            "sbatch: error: invalid partition specified: nope\n"
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
            False,
            False,
            "Batch job submission failed: Invalid partition name specified",
        ),
        (
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n",
            True,
            True,
            "Batch job submission failed: Socket timed out on send/recv operation",
        ),
        (
            "sbatch: error: Batch job submission failed: Submission rate too high, "
            "suggest using job arrays\n",
            True,
            True,
            "Batch job submission failed: Submission rate too high, suggest using job arrays",
        ),
        (
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
            "(connect failure)\n",
            True,
            False,
            "Batch job submission failed: Unable to contact slurm controller (connect failure)",
        ),
        ("slurm_load_jobs error: Invalid job id specified\n", False, False, None),
    ],
)
def test_error_classification(
    stderr: str, transient: bool, rate: bool, message: str | None
) -> None:
    assert parse.is_transient(stderr) is transient
    assert parse.is_rate_limited(stderr) is rate
    if message is not None:
        assert parse.error_text(stderr) == message


def test_unknown_ids_answer() -> None:
    assert parse.unknown_ids("slurm_load_jobs error: Invalid job id specified\n")
    assert not parse.unknown_ids("squeue: error: Unable to contact slurm controller\n")


def test_states_table_covers_the_slurm_states() -> None:
    finals = {
        "COMPLETED": State.SYSTEM_ERROR,  # only without a result file
        "FAILED": State.SYSTEM_ERROR,
        "TIMEOUT": State.EXECUTOR_ERROR,
        "OUT_OF_MEMORY": State.EXECUTOR_ERROR,
        "NODE_FAIL": State.SYSTEM_ERROR,
        "BOOT_FAIL": State.SYSTEM_ERROR,
        "DEADLINE": State.SYSTEM_ERROR,
        "PREEMPTED": State.PREEMPTED,
        "CANCELLED": State.CANCELED,
    }
    for name, state in finals.items():
        assert TABLE[name].state == state, name
        assert TABLE[name].state in FINAL
    for name in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"):
        assert TABLE[name].state is None, name
    assert TABLE["COMPLETED"].trust_result and TABLE["FAILED"].trust_result
    assert not TABLE["TIMEOUT"].trust_result
    # "CANCELLED by 0" (older squeue) and unknown future states.
    assert lookup("CANCELLED by 0").state == State.CANCELED
    new = lookup("SOME_NEW_STATE")
    assert new.state is None and "SOME_NEW_STATE" in new.why


def job(**resources: object) -> Job:
    return Job.model_validate(
        {
            "id": "j1",
            "creation_time": datetime.now(UTC),
            "executors": [{"image": "x", "command": ["true"]}],
            "resources": resources or None,
        }
    )


def test_resources_map_to_sbatch_options() -> None:
    opts = script.options(
        job(
            cpu_cores=4,
            ram_gb=1.5,
            disk_gb=10,
            backend_parameters={
                "backend": "slurm",
                "partition": "gpu,debug",
                "account": "proj-1",
                "qos": "high",
                "time": "1-02:00:00",
                "reservation": "maint",
                "constraint": "haswell&(ib|eth)",
                "nodes": "1-2",
                "ntasks": "4",
                "gres": "gpu:a100:2",
            },
        ),
        script.Defaults(partition="batch", time="60"),
    )
    assert opts == (
        "--cpus-per-task=4",
        "--mem=1536M",
        "--tmp=10240M",
        "--account=proj-1",
        "--constraint=haswell&(ib|eth)",
        "--gres=gpu:a100:2",
        "--nodes=1-2",
        "--ntasks=4",
        "--partition=gpu,debug",
        "--qos=high",
        "--reservation=maint",
        "--time=1-02:00:00",
    )
    # Site defaults apply when the job names nothing.
    assert script.options(job(), script.Defaults(partition="batch", time="60")) == (
        "--cpus-per-task=1",
        "--partition=batch",
        "--time=60",
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("partition", "debug --wrap=id"),
        ("partition", "a\nb"),
        ("account", "$(reboot)"),
        ("time", "1;reboot"),
        ("time", "soon"),
        ("nodes", "0"),
        ("ntasks", "-1"),
        ("gres", "gpu:1 --uid=0"),
        ("constraint", "a`id`"),
        ("qos", ""),
    ],
)
def test_bad_parameter_values_are_refused(key: str, value: str) -> None:
    errors = script.check_parameters({key: value})
    assert key in errors
    with pytest.raises(ValueError, match=key):
        script.options(job(backend_parameters={key: value}), script.Defaults())


@pytest.mark.parametrize("value", ["5", "5:30", "2:00:00", "1-0", "1-2:30", "UNLIMITED"])
def test_good_time_limits(value: str) -> None:
    assert script.check_parameters({"time": value}) == {}


def test_defaults_are_validated_too() -> None:
    with pytest.raises(ValueError, match="partition"):
        script.Defaults(partition="bad name")


def test_script_body_quotes_paths_and_runs_the_node_runner() -> None:
    body = script_body("/opt/venv/bin/python", Path("/shared/arrays/it's here; rm -rf ~"))
    assert body.startswith("#!/bin/sh\n")
    last = body.strip().splitlines()[-1]
    assert shlex.split(last) == [
        "exec",
        "/opt/venv/bin/python",
        "-m",
        "jobgate.runner.node",
        "--list",
        "/shared/arrays/it's here; rm -rf ~",
    ]
    # The shell agrees: it sees exactly these words.
    echo = last.replace("exec ", "printf '%s\\n' ", 1)
    out = subprocess.run(["sh", "-c", echo], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "/shared/arrays/it's here; rm -rf ~"


def test_ambiguous_failures_are_those_where_the_job_may_exist() -> None:
    assert parse.is_ambiguous(
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
    )
    assert parse.is_ambiguous("error: sbatch timed out after 60s (Socket timed out)")
    assert not parse.is_ambiguous(
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)"
    )
    assert not parse.is_ambiguous(
        "sbatch: error: Batch job submission failed: Submission rate too high"
    )


def test_single_job_script_takes_the_task_dir_as_its_argument() -> None:
    body = script_body("/opt/my venv/bin/python", None)
    path = "/shared/jobs/x y; $(id)"
    out = subprocess.run(
        ["sh", "-c", body.replace("exec ", "printf '%s\\n' ", 1), "sh", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["/opt/my venv/bin/python", "-m", "jobgate.runner.node", path]
