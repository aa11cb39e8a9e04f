"""Crash-safe file writes: write a temp file in the same folder, fsync it, rename over the target, fsync the folder.

A kill at any instant leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _process_umask() -> int:
    old = os.umask(0o022)     # reading the umask means setting it; done once, at import
    os.umask(old)
    return old


# mkstemp makes 0600 files; an exported mask or a shipped resource must be readable as any new file would be
_NEW_FILE_MODE = 0o666 & ~_process_umask()


def fsync_dir(folder: Path) -> None:
    """Make the names just created or renamed in `folder` durable (where the platform lets a folder be synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some platforms (Windows) cannot open folders; rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` to produce the file's content, then publish it atomically at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temp name ends with the target's name, so writers that pick a format by extension (.nii.gz) still work
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
