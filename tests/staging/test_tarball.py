"""The tarball extractor against crafted archives: nothing lands, links or points outside
the destination, refusals name the member, and limits hold before anything is written."""

from __future__ import annotations

import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from jobgate.staging.tarball import (
    Entry,
    ExtractLimits,
    Kind,
    OverLimit,
    TarballRefused,
    UnsafeMember,
    check,
    extract,
    is_tarball,
)
from jobgate.staging.tarball import _Writer as _Writer
from tests.staging.archives import (
    CVE_PAYLOAD,
    Member,
    cve_2025_4517,
    directory,
    hardlink,
    member,
    symlink,
    tarball,
)

LIMITS = ExtractLimits(max_bytes=1 << 20, max_files=100)


@pytest.fixture()
def box(tmp_path: Path) -> Path:
    """``box/secret`` (0600) sits beside the destination ``box/task/in``."""
    (tmp_path / "task").mkdir()
    secret = tmp_path / "secret"
    secret.write_text("SECRET\n")
    secret.chmod(0o600)
    return tmp_path


def archive(box: Path, members: list[Member], mode: str = "w") -> Path:
    path = box / "archive.tar"
    path.write_bytes(tarball(members, mode))
    return path


def everything(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def assert_secret_untouched(box: Path) -> None:
    secret = box / "secret"
    st = secret.lstat()
    assert secret.read_text() == "SECRET\n"
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 1


def refuse(box: Path, members: list[Member], *, limits: ExtractLimits = LIMITS) -> TarballRefused:
    """Extract, expect a refusal before anything is written; return it."""
    src = archive(box, members)
    with pytest.raises(TarballRefused) as caught:
        check(src, limits)
    with pytest.raises(TarballRefused) as again:
        extract(src, box / "task" / "in", limits)
    assert str(again.value) == str(caught.value)
    assert not (box / "task" / "in").exists()  # not even the destination directory
    assert everything(box) == {"task", "secret", "archive.tar"}
    assert_secret_untouched(box)
    return caught.value


# -- CVE-2025-4517 -------------------------------------------------------------------------


@pytest.mark.skipif(
    sys.version_info >= (3, 13, 4)
    or (3, 12, 11) <= sys.version_info < (3, 13)
    or (3, 11, 13) <= sys.version_info < (3, 12),
    reason="this interpreter's tarfile has the CVE-2025-4517 fix",
)
def test_the_crafted_archive_does_escape_tarfiles_data_filter_here(box: Path) -> None:
    # Shows the archive below is a real exploit on this interpreter, so the refusal in the
    # next test is the extractor's doing.
    src = archive(box, cve_2025_4517(levels_up=2, target="secret"))
    dest = box / "task" / "in"
    dest.mkdir()
    with tarfile.open(src) as tar:
        tar.extractall(dest, filter="data")
    assert (box / "secret").read_bytes() == CVE_PAYLOAD
    assert stat.S_IMODE((box / "secret").stat().st_mode) == 0o755


def test_cve_2025_4517_archive_is_refused_with_nothing_written(box: Path) -> None:
    refused = refuse(box, cve_2025_4517(levels_up=2, target="secret"))
    assert isinstance(refused, UnsafeMember)
    assert refused.member.startswith("a/b/c/") and "through the symlink 'a'" in refused.why


@pytest.mark.parametrize(
    ("members", "why"),
    [
        # Each step of the exploit alone, on an archive that has the layout before it.
        ([symlink("escape", "a/" + "l" * 254 + "/../../..")], "'..' after a name"),
        ([symlink("link", "d"), hardlink("flaglink", "link/../../secret")], "'..' in"),
        (
            [member("d/f", b"x"), symlink("l", "d"), hardlink("h", "l/f")],
            "'l/f' is not a regular file earlier",
        ),
        ([symlink("a", "."), symlink("x", "a/..")], "'..' after a name"),
    ],
)
def test_each_step_of_the_escape_is_refused(box: Path, members: list[Member], why: str) -> None:
    assert why in refuse(box, members).why


# -- links --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([symlink("esc", "/etc/passwd")], "absolute path '/etc/passwd'"),
        ([symlink("esc", "..")], "outside the destination"),
        ([symlink("sub/esc", "../..")], "outside the destination"),
        ([symlink("sub/deeper/esc", "../../../secret")], "outside the destination"),
        ([symlink("esc", "")], "empty"),
        ([symlink("esc", "é\0b")], "NUL"),  # non-ASCII: a pax header, which keeps NUL
        ([hardlink("hard", "/etc/passwd")], "absolute path '/etc/passwd'"),
        ([hardlink("hard", "../secret")], "'..' in"),
        ([hardlink("hard", "not-there")], "not a regular file earlier in the archive"),
        ([member("f", b"x"), symlink("s", "f"), hardlink("hard", "s")], "not a regular file"),
        ([hardlink("hard", "later"), member("later", b"x")], "not a regular file earlier"),
        ([member("f", b"x"), hardlink("f", "f")], "points to itself"),
    ],
)
def test_links_leaving_the_destination_are_refused(
    box: Path, members: list[Member], why: str
) -> None:
    assert why in refuse(box, members).why


def test_a_symlink_then_a_file_through_it_is_refused(box: Path) -> None:
    # Even a link pointing inside: nothing is ever written through a symlink.
    members = [directory("real"), symlink("link", "real"), member("link/f.txt", b"x")]
    refused = refuse(box, members)
    assert refused.member == "link/f.txt" and "through the symlink 'link'" in refused.why
    members = [member("a/f.txt", b"x"), symlink("a", "/tmp")]
    assert "symlink over the directory" in refuse(box, members).why
    members = [member("f", b"x"), member("f/g", b"y")]
    assert "through the file 'f'" in refuse(box, members).why


def test_links_inside_are_extracted_and_never_followed(box: Path) -> None:
    members = [
        directory("dir"),
        member("dir/a.txt", b"A"),
        symlink("up", "dir/a.txt"),
        symlink("dir/sub/back", "../../dir/a.txt"),
        symlink("dangling", "dir/nowhere"),
        hardlink("dir/b.txt", "dir/a.txt"),
        hardlink("/abs-hard", "./dir//a.txt"),
    ]
    dest = box / "task" / "in"
    extract(archive(box, members), dest, LIMITS)
    assert os.readlink(dest / "up") == "dir/a.txt"
    assert os.readlink(dest / "dir/sub/back") == "../../dir/a.txt"
    assert (dest / "dir/sub/back").read_bytes() == b"A"
    assert os.path.islink(dest / "dangling") and not (dest / "dangling").exists()
    a = (dest / "dir/a.txt").stat()
    assert a.st_nlink == 3 and (dest / "abs-hard").stat().st_ino == a.st_ino
    assert (dest / "dir/b.txt").samefile(dest / "dir/a.txt")


def test_a_later_member_replaces_a_file_or_link_without_writing_through_it(box: Path) -> None:
    members = [
        member("f", b"first"),
        member("f", b"second"),
        member("out", b"x"),
        symlink("out", "f"),  # the file becomes a link
        symlink("l", "f"),
        member("l", b"plain"),  # the link becomes a file: the link's target is untouched
        member("h0", b"h0"),
        hardlink("h", "h0"),
        member("h", b"new h"),  # replaces the hard link: h0 keeps its bytes
    ]
    dest = box / "task" / "in"
    extract(archive(box, members), dest, LIMITS)
    assert (dest / "f").read_bytes() == b"second"
    assert os.readlink(dest / "out") == "f"
    assert not (dest / "l").is_symlink() and (dest / "l").read_bytes() == b"plain"
    assert (dest / "h0").read_bytes() == b"h0" and (dest / "h").read_bytes() == b"new h"


# -- what is already in the destination ------------------------------------------------------


def test_a_symlink_already_in_the_destination_is_never_followed(box: Path) -> None:
    dest = box / "task" / "in"
    dest.mkdir()
    (dest / "dirlink").symlink_to(box)  # left by an earlier input, say
    (dest / "filelink").symlink_to(box / "secret")
    with pytest.raises(UnsafeMember) as caught:
        extract(archive(box, [member("dirlink/secret", b"evil")]), dest, LIMITS)
    assert "'dirlink' in the destination is a symlink" in caught.value.why
    # A file over a symlink replaces the link; it does not write to its target.
    extract(archive(box, [member("filelink", b"evil", mode=0o777)]), dest, LIMITS)
    assert not (dest / "filelink").is_symlink() and (dest / "filelink").read_bytes() == b"evil"
    assert_secret_untouched(box)


def test_the_writer_links_only_files_it_wrote(box: Path) -> None:
    # The check already refuses a hard link to a name the archive did not write; the
    # writer confirms by inode, so a file already in the destination cannot be linked.
    dest = box / "task" / "in"
    dest.mkdir()
    os.link(box / "secret", dest / "planted")
    src = archive(box, [hardlink("h", "planted")])
    writer = _Writer(dest, 1 << 20)
    try:
        with tarfile.open(src) as tar, pytest.raises(UnsafeMember) as caught:
            writer.write(tar, Entry(tar.getmembers()[0], ("h",), Kind.HARDLINK, ("planted",)))
    finally:
        writer.close()
    assert "not a file extracted from this archive" in caught.value.why
    assert not (dest / "h").exists() and (box / "secret").stat().st_nlink == 2


# -- names, types, modes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([member("../evil.txt", b"evil")], "'..' in the name"),
        ([member("ok/../../evil.txt", b"evil")], "'..' in the name"),
        ([member("é\0b", b"x")], "NUL"),
        ([member("x" * 256, b"x")], "over 255 bytes"),
        ([member("/".join(["d"] * 257), b"x")], "more than 256 levels"),
        ([member("/".join(["d" * 200] * 21), b"x")], "longer than 4095 bytes"),
        ([member("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)], "special file"),
        ([member("blk", type=tarfile.BLKTYPE, devmajor=8, devminor=0)], "special file"),
        ([member("fifo", type=tarfile.FIFOTYPE)], "special file"),
        ([member("odd", b"x", type=b"Z")], "unsupported member type"),
        ([member("./", b"x")], "cannot replace the destination"),
        ([directory("d"), member("d", b"x")], "a file over the directory"),
        ([member("d", b"x"), directory("d")], "a directory over the file"),
    ],
)
def test_bad_names_and_special_files_are_refused(
    box: Path, members: list[Member], why: str
) -> None:
    assert why in refuse(box, members).why


def test_owner_and_dangerous_modes_are_not_taken_from_the_archive(box: Path) -> None:
    members = [
        directory("./"),
        directory("locked", mode=0o000),
        member("locked/setuid", b"x", mode=0o4777, uid=4242, gid=4242),
        member("locked/private", b"x", mode=0o000),
        member("script", b"x", mode=0o2775, mtime=1_000_000),
        member("/abs.txt", b"abs"),
    ]
    dest = box / "task" / "in"
    extract(archive(box, members), dest, LIMITS)
    modes = {p: stat.S_IMODE((dest / p).stat().st_mode) for p in everything(dest)}
    assert modes == {
        "locked": 0o700,
        "locked/setuid": 0o755,
        "locked/private": 0o600,
        "script": 0o755,
        "abs.txt": 0o644,
    }
    assert (dest / "locked/setuid").stat().st_uid == os.getuid()
    assert (dest / "script").stat().st_mtime == 1_000_000
    assert (dest / "abs.txt").read_bytes() == b"abs"


# -- limits --------------------------------------------------------------------------------


def test_limits_are_checked_over_the_whole_archive_before_writing(box: Path) -> None:
    # The last member tips it over: with a check per member as it is written, the first
    # 15 MiB would already be on disk.
    big = [member(f"f{i}.bin", bytes(1 << 20)) for i in range(16)]
    refused = refuse(box, big, limits=ExtractLimits(max_bytes=15 * (1 << 20) + 1, max_files=100))
    assert isinstance(refused, OverLimit) and refused.member == "f15.bin"
    assert "unpacks to more than 15728641 bytes" in refused.why
    many = [member(f"f{i}", b"x") for i in range(11)]
    refused = refuse(box, many, limits=ExtractLimits(max_bytes=1 << 20, max_files=10))
    assert isinstance(refused, OverLimit) and "more than 10 entries" in refused.why
    # Exactly at both limits is fine.
    summary = check(archive(box, many[:10]), ExtractLimits(max_bytes=10, max_files=10))
    assert (summary.entries, summary.bytes) == (10, 10)


def test_compressed_archives_and_non_archives(box: Path) -> None:
    for mode in ("w:gz", "w:bz2", "w:xz"):
        src = box / f"a.{mode[2:]}"
        src.write_bytes(tarball([member("x/y.txt", b"hello")], mode))
        assert is_tarball(src)
        extract(src, box / "task" / mode[2:], LIMITS)
        assert (box / "task" / mode[2:] / "x/y.txt").read_bytes() == b"hello"
    plain = box / "plain"
    plain.write_bytes(b"just bytes\n" * 100)
    assert not is_tarball(plain)
    truncated = box / "cut.tar"
    truncated.write_bytes(tarball([member("big", bytes(100_000))], "w")[:20_000])
    with pytest.raises(tarfile.TarError):
        extract(truncated, box / "task" / "cut", LIMITS)


def test_zstd_archives_as_diracx_packs_them(box: Path) -> None:
    # tarfile reads zstd only from Python 3.14: the extractor decompresses it itself, and
    # the same rules and limits apply.
    good = box / "a.tar.zst"
    good.write_bytes(zstandard.ZstdCompressor().compress(tarball([member("x/y.txt", b"hi")], "w")))
    assert is_tarball(good)
    extract(good, box / "task" / "zst", LIMITS)
    assert (box / "task" / "zst" / "x/y.txt").read_bytes() == b"hi"
    evil = box / "evil.tar.zst"
    evil.write_bytes(zstandard.ZstdCompressor().compress(tarball([symlink("l", "/etc")], "w")))
    with pytest.raises(UnsafeMember):
        check(evil, LIMITS)
    bomb = box / "bomb.tar.zst"
    bomb.write_bytes(zstandard.ZstdCompressor().compress(bytes(4 << 20)))
    with pytest.raises(OverLimit):
        check(bomb, ExtractLimits(max_bytes=1 << 20, max_files=10))
    not_tar = box / "data.zst"
    not_tar.write_bytes(zstandard.ZstdCompressor().compress(b"just bytes\n" * 100))
    assert not is_tarball(not_tar)


def test_many_directories_in_any_order_land_where_named(box: Path) -> None:
    # More directories than the writer keeps open, visited round-robin, with hard links
    # across them: every descriptor it reopens must still be the directory it names.
    members: list[Member] = []
    for i in range(300):
        members.append(member(f"d{i % 97}/sub{i % 3}/f{i}", f"{i}".encode()))
    members += [hardlink(f"d{i % 89}/h{i}", f"d{i % 97}/sub{i % 3}/f{i}") for i in range(0, 300, 7)]
    dest = box / "task" / "in"
    extract(archive(box, members), dest, ExtractLimits(max_bytes=1 << 20, max_files=1000))
    for i in range(300):
        assert (dest / f"d{i % 97}/sub{i % 3}/f{i}").read_text() == str(i)
    for i in range(0, 300, 7):
        assert (dest / f"d{i % 89}/h{i}").samefile(dest / f"d{i % 97}/sub{i % 3}/f{i}")
    assert len(everything(dest)) == 97 + 97 * 3 + 300 + len(range(0, 300, 7))
