"""Parsers over captured Grid Engine output, the states table, and qsub options.

The files in ``data/`` were printed by Son of Grid Engine 8.1.9 (Debian 12's gridengine-*
packages) on the test cluster (tests/gridengine/cluster.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobgate.backends.batch.scheduler import script_body
from jobgate.backends.gridengine import parse, script
from jobgate.backends.gridengine.states import TABLE, accounting, lookup
from jobgate.domain.models import Job
from jobgate.domain.states import State

DATA = Path(__file__).parent / "data"


def data(name: str) -> str:
    return (DATA / name).read_text()


# -- qsub -------------------------------------------------------------------------------


def test_qsub_terse_single_and_array() -> None:
    assert parse.qsub_terse("22\n") == parse.Submitted("22")
    assert parse.qsub_terse("22\n").native_ids == ["22"]
    arr = parse.qsub_terse("23.1-3:1\n")
    assert arr.job_number == "23" and arr.tasks == (1, 2, 3)
    assert arr.native_ids == ["23.1", "23.2", "23.3"]
    assert parse.qsub_terse("8.1-7:2\n").tasks == (1, 3, 5, 7)
    for bad in ("", 'Your job 22 ("x") has been submitted\n', "0\n", "22.x\n"):
        with pytest.raises(parse.ParseError):
            parse.qsub_terse(bad)


def test_native_ids_and_task_ranges() -> None:
    assert parse.native_id("123") == ("123", None)
    assert parse.native_id("123.4") == ("123", 4)
    with pytest.raises(parse.ParseError):
        parse.native_id("123_4")
    assert parse.expand_tasks("2-5:1") == [2, 3, 4, 5]
    assert parse.expand_tasks("1,3,6,7") == [1, 3, 6, 7]
    assert parse.expand_tasks("1,4-8:2") == [1, 4, 6, 8]
    for bad in ("5-2:1", "0", "1-2:0", "a", "1-100000000:1"):
        with pytest.raises(parse.ParseError):
            parse.expand_tasks(bad)


# -- qstat -xml -------------------------------------------------------------------------


def test_qstat_running_and_pending_jobs() -> None:
    got = parse.qstat_xml(data("qstat_pending.xml"))
    # Running array tasks one by one, the pending rest of array 8 expanded from "2-5:1".
    assert sorted(got, key=lambda n: [int(p) for p in n.split(".")]) == [
        "2.1", "2.2", "2.3", "3", "4", "5", "6", "7",
        "8.1", "8.2", "8.3", "8.4", "8.5", "9", "10",
    ]  # fmt: skip
    assert got["2.3"] == parse.QueueEntry("2.3", "2", 3, "arrtest", "r", "jobgate.q@vm", 1)
    assert got["3"].slots == 2 and got["3"].task is None and got["3"].state == "r"
    assert got["8.1"].state == "r" and got["8.4"].state == "qw" and got["8.4"].queue == ""
    assert got["9"].state == "hqw" and got["9"].name == "held"
    assert got["5"].state == "qw" and got["5"].slots == 2


def test_qstat_error_deleting_suspended_and_ranges() -> None:
    assert parse.qstat_xml(data("qstat_error.xml"))["10"].state == "Eqw"
    deleting = parse.qstat_xml(data("qstat_deleting.xml"))
    assert deleting["25"].state == "dr"
    assert deleting["24.2"].state == "s"
    # Names come whole (qstat's table cuts them at 10 characters).
    assert deleting["24.1"].name.endswith("-more-than-thirty-characters-0123456789abcdef")
    ranges = parse.qstat_xml(data("qstat_ranges.xml"))
    assert [ranges[f"34.{t}"].state for t in range(1, 8)] == [
        "hqw", "qw", "hqw", "qw", "qw", "hqw", "hqw",
    ]  # fmt: skip
    assert parse.qstat_xml(data("qstat_empty.xml")) == {}


def test_qstat_garbage_is_an_error() -> None:
    for bad in ("", "error: commlib error", "<unknown_jobs/>", "<job_info><job_list/></job_info>"):
        with pytest.raises(parse.ParseError):
            parse.qstat_xml(bad)


# -- qstat -j, qacct ----------------------------------------------------------------------


def test_unknown_jobs() -> None:
    assert parse.unknown_jobs(data("qstat_j_unknown.txt")) == ["99999"]
    assert parse.unknown_jobs("Following jobs do not exist: \n99998, 99999\n") == [
        "99998",
        "99999",
    ]
    assert parse.unknown_jobs(data("qstat_xml_j_unknown.xml")) == ["99999"]
    assert parse.unknown_jobs("error: commlib error: got select error (Connection refused)\n") == []


def test_job_details_error_reason_and_scheduling_info() -> None:
    one = parse.job_details(data("qstat_j_error.txt"))
    assert list(one) == ["29"]
    assert one["29"].name == "jg-badwd"
    assert one["29"].error_reasons == ["can't chdir to /nonexistent/dir: No such file or directory"]
    assert one["29"].scheduling_info == ["Job is in error state"]
    two = parse.job_details(data("qstat_j_two.txt"))
    assert sorted(two) == ["30", "34"]
    assert two["34"].scheduling_info == [
        'queue instance "jobgate.q@vm" dropped because it is full',
        "All queues dropped because of overload or full",
        "Job is in hold state",
    ]
    assert two["30"].error_reasons == []


def test_qacct_records() -> None:
    (hrt,) = parse.qacct_records(data("qacct_h_rt.txt"))
    assert hrt.native_id == "26" and hrt.failed == 37 and hrt.exit_status == 137
    assert "h_rt" in hrt.failed_reason
    (deleted,) = parse.qacct_records(data("qacct_deleted.txt"))
    assert deleted.failed == 100 and deleted.name == "jg-stub"
    (ok,) = parse.qacct_records(data("qacct_ok.txt"))
    assert (ok.failed, ok.exit_status, ok.hostname) == (0, 0, "vm")
    tasks = parse.qacct_records(
        "=====\njobnumber 5\ntaskid 2\nfailed 0\nexit_status 1\n"
        "=====\njobnumber 5\ntaskid 3\nfailed 0\nexit_status 0\n"
    )
    assert [(r.native_id, r.exit_status) for r in tasks] == [("5.2", 1), ("5.3", 0)]


# -- errors -------------------------------------------------------------------------------

QMASTER_DOWN = (
    "error: commlib error: got select error (Connection refused)\n"
    'Unable to run job: unable to send message to qmaster using port 6444 on host "vm": '
    "got send error\nExiting.\n"
)


@pytest.mark.parametrize(
    ("stderr", "transient", "ambiguous", "message"),
    [
        (
            'Unable to run job: Job was rejected because job requests unknown queue "nope.q"\n'
            "Exiting.\n",
            False,
            False,
            'Job was rejected because job requests unknown queue "nope.q"',
        ),
        (
            'Unable to run job: job rejected: the requested parallel environment "nope" does '
            "not exist\nExiting.\n",
            False,
            False,
            'job rejected: the requested parallel environment "nope" does not exist',
        ),
        (
            'Unable to run job: attribute "h_vmem" is not a memory value\nExiting.\n',
            False,
            False,
            'attribute "h_vmem" is not a memory value',
        ),
        ("Unable to run job: error: no suitable queues\nExiting.\n", False, False, None),
        (
            QMASTER_DOWN,
            True,
            False,
            'unable to send message to qmaster using port 6444 on host "vm": got send error',
        ),
        (
            "error: commlib error: got select error (Connection reset by peer)\n"
            'unable to send message to qmaster using port 6444 on host "vm": got send error\n',
            True,
            True,
            None,
        ),
        (
            "error: failed receiving gdi request response for mid=1 (got no message).\n",
            True,
            True,
            "failed receiving gdi request response for mid=1 (got no message).",
        ),
        ("error: qsub timed out after 60s\n", True, True, "qsub timed out after 60s"),
        ('denied: job "99999" does not exist\n', False, False, 'job "99999" does not exist'),
    ],
)
def test_error_classification(
    stderr: str, transient: bool, ambiguous: bool, message: str | None
) -> None:
    assert parse.is_transient(stderr) is transient
    assert parse.is_ambiguous(stderr) is ambiguous
    if message is not None:
        assert parse.error_text(stderr) == message


# -- states ------------------------------------------------------------------------------


def test_states_table_queued_running_canceling() -> None:
    for name in ("qw", "hqw", "hRwq", "Eqw", "Ehqw", "Rq"):
        assert lookup(name).active == State.QUEUED, name
    for name in ("t", "r", "Rr", "Rt", "s", "ts", "S", "tS", "T", "tT", "hr"):
        assert lookup(name).active == State.RUNNING, name
    for name in ("dr", "dt", "dRr", "dqw", "ds"):
        assert lookup(name).canceling, name
    assert lookup("dqw").active == State.QUEUED and lookup("dr").active == State.RUNNING
    assert not any(row.canceling for key, row in TABLE.items() if "d" not in key)
    # qstat lists no finished jobs: nothing it shows is final.
    assert all(row.state is None for row in TABLE.values())
    assert "held" in lookup("hqw").why
    assert "qmod -cj" in lookup("Eqw").why
    assert "suspended" in lookup("s").why


def test_unknown_state_combinations_are_read_letter_by_letter() -> None:
    odd = lookup("dEhRqw")
    assert odd.state is None and odd.active == State.QUEUED and odd.canceling
    assert "error state E" in odd.why and "held" in odd.why and "dEhRqw" in odd.why
    assert lookup("hRs").active == State.RUNNING and "suspended" in lookup("hRs").why
    assert lookup("").active == State.QUEUED


# -- qsub options -------------------------------------------------------------------------


def job(**resources: object) -> Job:
    return Job.model_validate(
        {
            "id": "j1",
            "executors": [{"image": "alpine", "command": ["true"]}],
            "resources": resources or None,
            "creation_time": datetime.now(UTC),
        }
    )


def test_options_from_resources() -> None:
    d = script.Defaults()
    assert script.options(job(), d) == ()
    # Memory is per slot: 3 GiB over 2 cores is 1536 MiB each.
    assert script.options(job(cpu_cores=2, ram_gb=3), d) == (
        "-pe", "smp", "2", "-l", "h_vmem=1536M",
    )  # fmt: skip
    assert script.options(job(ram_gb=0.5), script.Defaults(memory_resource="mem_free")) == (
        "-l",
        "mem_free=512M",
    )
    assert script.options(job(ram_gb=1), script.Defaults(memory_resource=None)) == ()
    opts = script.options(
        job(
            cpu_cores=4,
            backend_parameters={
                "backend": "ge",
                "time": "1:30:00",
                "queue": "short.q@node*,long.q",
                "project": "p1",
                "account": "acct",
                "pe": "mpi",
                "resources": "gpu=1,arch=lx-amd64",
            },
        ),
        d,
    )
    assert opts == (
        "-pe", "mpi", "4",
        "-l", "h_rt=1:30:00,gpu=1,arch=lx-amd64",
        "-q", "short.q@node*,long.q",
        "-P", "p1",
        "-A", "acct",
    )  # fmt: skip


def test_site_defaults_apply_when_the_job_names_none() -> None:
    d = script.Defaults(queue="all.q", time="3600", project="site", pe="threads")
    assert script.options(job(cpu_cores=2), d) == (
        "-pe", "threads", "2", "-l", "h_rt=3600", "-q", "all.q", "-P", "site",
    )  # fmt: skip
    mine = job(backend_parameters={"queue": "mine.q", "time": "60"})
    assert script.options(mine, d) == ("-l", "h_rt=60", "-q", "mine.q", "-P", "site")
    with pytest.raises(ValueError, match="queue"):
        script.Defaults(queue="a b")
    with pytest.raises(ValueError, match="memory_resource"):
        script.Defaults(memory_resource="h_vmem=1G")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("queue", "all.q -V"),
        ("queue", "-V"),
        ("time", "1h"),
        ("time", "10;rm"),
        ("project", "$(id)"),
        ("pe", "smp 2"),
        ("resources", "h_vmem=1G -V"),
        ("resources", "a=b,,c=d"),
        ("account", "a\nb"),
    ],
)
def test_invalid_parameters_are_refused(key: str, value: str) -> None:
    assert key in script.check_parameters({key: value})
    with pytest.raises(ValueError, match=key):
        script.options(job(backend_parameters={key: value}), script.Defaults())


def test_common_options_never_pass_the_environment() -> None:
    assert "-V" not in script.COMMON and "-v" not in script.COMMON
    assert "-notify" not in script.COMMON
    assert script.COMMON[:1] == ("-terse",)


def test_disk_is_noted_not_requested() -> None:
    assert script.options(job(disk_gb=10), script.Defaults()) == ()
    assert "disk_gb=10" in script.notes(job(disk_gb=10))[0]
    assert script.notes(job()) == []


def test_placement_refuses_what_qsub_reads_specially() -> None:
    assert script.placement("jg-j1", "/s/jobs/j1/ge.out", "/s/jobs/j1") == (
        "-N", "jg-j1", "-o", "/s/jobs/j1/ge.out", "-wd", "/s/jobs/j1",
    )  # fmt: skip
    arr = script.placement("jg-array-ab", "/s/arrays/ab/$TASK_ID.out", "/s/arrays/ab", tasks=3)
    assert arr[-2:] == ("-t", "1-3")
    for name, out, wd in [
        ("1job", "/o", "/w"),  # names must not start with a digit
        ("a:b", "/o", "/w"),
        ("jg", "host:/o", "/w"),  # qsub reads host:path
        ("jg", "/o,/p", "/w"),  # and lists
        ("jg", "/o/$HOME", "/w"),  # and expands variables
        ("jg", "relative", "/w"),
        ("jg", "/o", "/w/../x"),
        ("jg", "/o", "/w x"),
    ]:
        with pytest.raises(ValueError):
            script.placement(name, out, wd)


def test_the_batch_script_holds_no_qsub_directives() -> None:
    # qsub reads lines starting with "#$" of a script as options.
    for listing in (None, Path("/s/arrays/x/taskdirs")):
        text = script_body("/opt/py env/bin/python", listing)
        assert not any(line.startswith("#$") for line in text.splitlines())


def test_accounting_explains_jobs_gone_without_a_result() -> None:
    (hrt,) = parse.qacct_records(data("qacct_h_rt.txt"))
    state, why = accounting(hrt.failed, hrt.failed_reason, hrt.exit_status)
    assert state == State.EXECUTOR_ERROR and "h_rt" in why
    (killed,) = parse.qacct_records(data("qacct_deleted.txt"))
    state, why = accounting(killed.failed, killed.failed_reason, killed.exit_status)
    assert state == State.SYSTEM_ERROR and "signal (9)" in why
    state, why = accounting(28, "changing into working directory", 0)
    assert state == State.SYSTEM_ERROR and "working directory" in why
    state, why = accounting(0, "", 0)
    assert state == State.SYSTEM_ERROR and "without a result file" in why
