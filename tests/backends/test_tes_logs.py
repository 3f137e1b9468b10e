"""Reading a remote task's output from successive FULL-view tails."""

from __future__ import annotations

import asyncio
from typing import Any

from jobgate.backends.tes.logs import RemoteLogReader, new_part, stream_of


def test_new_part_of_a_growing_whole_stream() -> None:
    assert new_part("", "a\n") == "a\n"
    assert new_part("a\n", "a\nb\n") == "b\n"
    assert new_part("a\nb\n", "a\nb\n") == ""


def test_new_part_of_a_sliding_tail() -> None:
    # The tail kept 4 characters: "b\nc\n" after "a\nb\n" was delivered.
    assert new_part("a\nb\n", "b\nc\n") == "c\n"
    assert new_part("a\nb\n", "x\ny\n") == "x\ny\n"  # no overlap: all of it is new


def test_stream_of_a_task_without_logs_yet() -> None:
    assert stream_of({"state": "QUEUED"}, 0, "stdout") is None
    assert stream_of({"logs": [{"logs": [{"stdout": "x", "exit_code": 0}]}]}, 1, "stdout") is None
    assert stream_of({"logs": [{"logs": [{"stdout": "x", "exit_code": 0}]}]}, 0, "stdout") == "x"


def test_reader_delivers_each_byte_once_and_spaces_its_fetches() -> None:
    tails = ["one\n", "one\ntwo\n"]
    fetched: list[int] = []

    async def fetch() -> dict[str, Any] | None:
        fetched.append(1)
        text = tails[min(len(fetched), len(tails)) - 1]
        return {"logs": [{"logs": [{"stdout": text, "exit_code": 0}]}]}

    async def run() -> list[bytes]:
        reader = RemoteLogReader(fetch, 0, "stdout", interval=0.05)
        out = [await reader.read(1024), await reader.read(1024)]  # the 2nd: too soon
        await asyncio.sleep(0.06)
        out += [await reader.read(2), await reader.read(1024)]
        return out

    assert asyncio.run(run()) == [b"one\n", b"", b"tw", b"o\n"]
    assert len(fetched) == 2
