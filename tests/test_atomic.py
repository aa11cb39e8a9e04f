"""Atomic writes publish files with the permissions any new file gets (mkstemp alone would make them 0600)."""
import os
import stat

from covidseg_core.atomic import atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_own(tmp_path):
    old = os.umask(0o022)
    try:
        new = atomic_write_text(tmp_path / "mask.json", "{}")
        assert _mode(new) == 0o644          # readable by a viewer run by another user, as a plain open() gives
        os.chmod(new, 0o640)
        atomic_write_text(new, "[]")
        assert _mode(new) == 0o640 and new.read_text() == "[]"
    finally:
        os.umask(old)
