"""The `covidseg` command. Its names and options are a contract (ARCHITECTURE.md): keep them stable.

Errors the user can act on print one line on stderr and exit 2; anything unexpected is logged with its traceback
to a log file and reported in one line (exit 3).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .errors import Cancelled, CovidSegError
from .events import Done, EpochReport, Message, Progress

log = logging.getLogger("covidseg")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


class _ProgressPrinter:
    """Turns job events into short progress lines on stderr (the CLI's progress bar)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._last = 0.0

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last < 0.5 and event.done != event.total:
                return
            self._last = now
            eta = f", about {event.eta_s:.0f} s left" if event.eta_s else ""
            sys.stderr.write(f"\r[{event.stage}] {event.done}/{event.total} {event.message}{eta}\033[K")
            if event.done == event.total:
                sys.stderr.write("\n")
        elif isinstance(event, EpochReport):
            parts = [f"{k}={v:.4f}" for k, v in {**event.losses, **event.metrics}.items()
                     if isinstance(v, (int, float))]
            sys.stderr.write(f"\r[{event.stage}] epoch {event.epoch}/{event.epochs} {' '.join(parts)} "
                             f"({event.seconds:.1f} s)\033[K\n")
        elif isinstance(event, Message):
            sys.stderr.write(f"\r{'warning: ' if event.level == 'warning' else ''}{event.text}\033[K\n")
        sys.stderr.flush()


def _run_job(job, quiet: bool = False):
    printer = _ProgressPrinter(quiet)
    result = None
    for event in job:
        printer(event)
        if isinstance(event, Done):
            result = event.result
    return result


# --- commands -----------------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import write_demo

    info = write_demo(args.out, seed=args.seed, n_slices=args.slices, size=args.size)
    _print_json(info)
    return 0


def cmd_info(args) -> int:
    from .io.loader import describe

    _print_json(describe(args.path, series_uid=args.series))
    return 0


def cmd_export(args) -> int:
    from .export import export_project
    from .project import Project

    project = Project.open(args.project, read_only=True)
    try:
        result = _run_job(export_project(project, args.out, source_id=args.source, which=args.masks), args.quiet)
    finally:
        project.close()
    _print_json(result)
    return 0


def cmd_gui(args) -> int:
    try:
        from app import main as gui_main
    except ImportError as exc:
        raise CovidSegError(f"The desktop app cannot start: {exc}.",
                            "Install the GUI extras: pip install 'covidseg-assist[gui]'.") from exc
    return gui_main([str(args.path)] if args.path else [])


COMMANDS = {}


def _register_optional_commands(sub) -> None:
    """Commands whose modules are optional at import time register themselves here."""
    from . import cli_commands

    cli_commands.register(sub, COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="covidseg", description="CovidSeg Assist: COVID-19 infection masks from "
                                "slice labels.")
    p.add_argument("--version", action="version", version=f"covidseg {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="write a small synthetic study (labels included)")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--slices", type=int, default=32)
    d.add_argument("--size", type=int, default=128)
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("info", help="describe a study (DICOM folder, NIfTI file, image folder) as JSON")
    i.add_argument("path", type=Path)
    i.add_argument("--series", default=None, help="SeriesInstanceUID to read when a folder holds several")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", help="a project's masks as NIfTI in the source geometry (+ volumes as CSV/JSON)")
    e.add_argument("--project", required=True, type=Path)
    e.add_argument("--out", required=True, type=Path, help="FILE.nii.gz")
    e.add_argument("--source", default=None, help="source id, when the project holds several studies")
    e.add_argument("--masks", choices=("corrected", "predicted"), default="corrected",
                   help="corrected: predictions with the user's corrections applied (default)")
    e.set_defaults(func=cmd_export)

    g = sub.add_parser("gui", help="open the desktop app")
    g.add_argument("path", nargs="?", type=Path, help="a project folder or a study to open")
    g.set_defaults(func=cmd_gui)

    _register_optional_commands(sub)
    return p


def _log_file() -> Path:
    folder = Path(tempfile.gettempdir()) / "covidseg-logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "covidseg-cli.log"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"covidseg: {exc}", file=sys.stderr)
        return 130
    except CovidSegError as exc:
        print(f"covidseg: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:              # output piped into `head`: not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("covidseg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unexpected: keep the traceback for the maintainer, one line for the user
        path = _log_file()
        crash_log = logging.getLogger("covidseg.crash")
        crash_log.propagate = False          # the traceback goes to the file, not to the user's terminal
        fh = logging.FileHandler(path)
        crash_log.addHandler(fh)
        crash_log.exception("unexpected error in covidseg %s", " ".join(sys.argv[1:]))
        crash_log.removeHandler(fh)
        fh.close()
        print(f"covidseg: unexpected error: {type(exc).__name__}: {exc} (details in {path})", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
