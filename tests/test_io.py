"""The atomic-write helpers: results appear whole or not at all, with the permissions the umask gives."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedkit._io import atomic_dir, atomic_path, write_json_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_files_and_directories_get_the_umask_permissions(tmp_path: Path, umask: int) -> None:
    write_json_atomic(tmp_path / "manifest.json", {"a": 1})
    with atomic_path(tmp_path / "scores.parquet") as tmp:
        tmp.write_bytes(b"PAR1")
    with atomic_dir(tmp_path / "tables") as tmp:
        (tmp / "inside.json").write_text("{}")
        write_json_atomic(tmp / "manifest.json", {})
    assert mode(tmp_path / "manifest.json") == 0o666 & ~umask
    assert mode(tmp_path / "scores.parquet") == 0o666 & ~umask
    assert mode(tmp_path / "tables") == 0o777 & ~umask
    assert mode(tmp_path / "tables" / "manifest.json") == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "scores.parquet", "tables"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_is_replaced_whole(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "m.json", {"v": 1})
    write_json_atomic(tmp_path / "m.json", {"v": 2})
    assert (tmp_path / "m.json").read_text() == '{\n  "v": 2\n}\n'
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "old").write_text("1")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "new").write_text("2")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "m.json"]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    import subprocess
    import sys

    target = tmp_path / "scores.parquet"
    # a writer that dies with SIGKILL inside atomic_path: its temporary sibling stays
    code = (
        "import os, signal, sys\n"
        "from embedkit._io import atomic_path, atomic_dir\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    with atomic_dir(sys.argv[2]) as d:\n"
        "        (d / 'f').write_text('half')\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(target), str(tmp_path / "tables")], timeout=60)
    assert proc.returncode == -9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.endswith(".tmp") for n in left), left
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    with atomic_dir(tmp_path / "tables") as d:
        (d / "f").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet", "tables"]


def test_a_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with atomic_path(target) as outer:
        outer.write_bytes(b"in progress")
        write_json_atomic(tmp_path / "other.json", {})  # another path: not swept
        assert outer.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "x.json"]
