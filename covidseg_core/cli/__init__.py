"""The `covidseg` command. Its names, options and outputs are a contract (README, "The command line"): keep them
stable. `main` parses (parser.py) and runs one command of a group module (study_commands, training_commands,
prediction_commands); output.py prints results and progress.

Errors the user can act on print one line on stderr and exit 2; anything unexpected is logged with its traceback
to a log file and reported in one line (exit 3).
"""
from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from ..errors import Cancelled, CovidSegError
from .parser import build_parser


def _log_file() -> Path:
    folder = Path(tempfile.gettempdir()) / "covidseg-logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "covidseg-cli.log"


def _me() -> str:
    """Who speaks in an error line: under torchrun all ranks share one terminal, so rank N > 0 says so."""
    from ..distributed import env_world

    rank = env_world().rank
    return f"covidseg (rank {rank})" if rank else "covidseg"


def log_level(verbose: bool, rank: int) -> int:
    """Under torchrun every rank logs to one terminal: rank 0 speaks for all, the others only report errors."""
    level = logging.DEBUG if verbose else logging.WARNING
    return max(level, logging.ERROR) if rank else level


def main(argv: list[str] | None = None) -> int:
    from ..distributed import env_world

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=log_level(args.verbose, env_world().rank), format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"covidseg: {exc}", file=sys.stderr)
        return 130
    except CovidSegError as exc:
        print(f"{_me()}: error: {exc}", file=sys.stderr)
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
        print(f"{_me()}: unexpected error: {type(exc).__name__}: {exc} (details in {path})", file=sys.stderr)
        return 3

