"""CovidSeg Assist desktop app (PySide6 + pyqtgraph). It drives covidseg_core and adds no algorithm of its own.

`main(argv)` is the entry point of both `python -m app [PATH]` and `covidseg gui [PATH]`.
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .application import run

    return run(argv)
