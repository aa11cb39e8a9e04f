"""The `covidseg` argument parser: global options, then one group module per kind of command."""
from __future__ import annotations

import argparse
import os

from .. import __version__
from . import prediction_commands, project_commands, study_commands, training_commands


def build_parser() -> argparse.ArgumentParser:
    # Idle OpenMP threads spin by default; on a busy or shared CPU that made training ~10x slower (measured on
    # the 2-core dev machine). Passive waiting costs little on an idle machine. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    p = argparse.ArgumentParser(prog="covidseg", description="CovidSeg Assist: COVID-19 infection masks from "
                                "slice labels.")
    p.add_argument("--version", action="version", version=f"covidseg {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (study_commands, project_commands, training_commands, prediction_commands):
        group.add_commands(sub)
    return p
