"""Where a command may write: never into a study's source files or a job's input folders, and over an existing
file only when the user said so (`--overwrite` on the command line, a confirmation in the app).

Paths are compared after resolving symlinks, so a link that points into the data is caught as well.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError


def real(path: str | os.PathLike) -> Path:
    """The path with every symlink resolved (the parts that do not exist yet are kept as given)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_protected(target: str | os.PathLike, protected: Iterable[tuple[Path, str]], hint: str) -> None:
    """InputError when `target` is, or lies inside, one of `protected` ((path, what it is) pairs): a file is
    protected itself, a folder with everything in it."""
    where = real(target)
    for path, what in protected:
        guarded = real(path)
        if _inside(where, guarded):
            same = "is" if where == guarded else "lies inside"
            raise InputError(f"Refusing to write {target}: it {same} {what} ({path}), which would be overwritten.",
                             hint)


def refuse_existing(targets: Iterable[str | os.PathLike], overwrite: bool, hint: str) -> None:
    """InputError naming the targets that already exist, unless `overwrite`."""
    if overwrite:
        return
    existing = [Path(t) for t in targets if os.path.lexists(t)]
    if existing:
        shown = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise InputError(f"{len(existing)} output file(s) already exist ({shown}) in {existing[0].parent}.", hint)


def study_protected(source: str | os.PathLike, what: str = "the study's source") -> list[tuple[Path, str]]:
    """What must not be written to for a study: the volume file (with the raw data file of a .mhd/.nhdr header,
    which lies beside it), or the whole DICOM / image folder."""
    source = Path(source)
    protected = [(source, what)]
    if source.is_file() and source.name.lower().endswith((".mhd", ".nhdr")):
        protected += [(p, what) for p in source.parent.glob(source.name.rsplit(".", 1)[0] + ".*")]
    return protected
