"""Atomic writes: every artifact goes to a temporary sibling first, then is renamed into place.

The temporary file or directory is created with mode 0o666 (0o777 for a directory) and the process's umask
applied by the kernel, so the renamed result has the permissions any other new file would get (0o644 and
0o755 under umask 022), not ``mkstemp``'s private 0o600. A writer killed outright (SIGKILL) leaves its
temporary sibling behind; the next write of the same path removes it (:func:`sweep_stale_temps`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: Attempts at a fresh random temporary name before giving up (a clash is a 1-in-2**32 event).
_TEMP_ATTEMPTS = 100


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _temp_name(path: Path) -> Path:
    # host and pid in the name: a later write of the same path can tell a dead writer's leftover
    return path.parent / f".{path.name}.{_host()}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by writers that were killed (SIGKILL, a crash: no
    ``finally`` ran). Only this host's, and only those whose process is gone; returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{re.escape(_host())}\.(\d+)-[0-9a-f]{{8}}\.tmp$")
    removed = []
    for sibling in path.parent.iterdir():
        m = pattern.match(sibling.name)
        if m is None or int(m[1]) == os.getpid() or _alive(int(m[1])):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                sibling.unlink()
        removed.append(sibling)
    return removed


def _make_temp_file(path: Path) -> Path:
    """A new empty file beside ``path``, mode ``0o666 & ~umask`` (created exclusively: never an old one)."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = _temp_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _make_temp_dir(path: Path) -> Path:
    """A new empty directory beside ``path``, mode ``0o777 & ~umask``."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = _temp_name(path)
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary directory beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    tmp_path = _make_temp_file(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (an existing one is swapped out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    sweep_stale_temps(path)
    tmp = _make_temp_dir(path)
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json_file(path: Path, missing: str) -> Any:
    """The JSON document in ``path``; a :class:`~embedkit.exceptions.FormatError` saying ``missing`` when
    the file does not exist, or that it is damaged when it is not JSON."""
    from .exceptions import FormatError

    if not path.exists():
        raise FormatError(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path} is damaged: {exc}") from exc
