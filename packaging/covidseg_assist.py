"""Entry point of the frozen CovidSeg Assist app (the script PyInstaller builds from; see covidseg-assist.spec).

    covidseg-assist [PATH] [--demo]         the desktop app (app.main), as `python -m app`
    covidseg-assist cli <command> ...       the `covidseg` command line (covidseg_core.cli.main)
    covidseg-assist --smoke-test OUTDIR     headless self-check of the bundle (covidseg_smoke.py), exit 0 when it passes

One executable serves all three so that the bundle needs no Python and no second copy of the libraries.
"""
from __future__ import annotations

import multiprocessing
import sys

SMOKE_FLAG = "--smoke-test"
CLI_WORD = "cli"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == CLI_WORD:
        from covidseg_core.cli import main as cli_main

        return cli_main(argv[1:])
    if argv and argv[0] == SMOKE_FLAG:
        from covidseg_smoke import main as smoke_main

        return smoke_main(argv[1:])
    from app import main as gui_main

    return gui_main(argv)


if __name__ == "__main__":
    # A frozen app that starts worker processes (spawn on Windows and macOS) must stop them re-running main().
    multiprocessing.freeze_support()
    sys.exit(main())
