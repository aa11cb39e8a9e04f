"""Commands of `covidseg` beyond demo/info: pipeline stages, export and the GUI. Wired into cli.build_parser."""
from __future__ import annotations


def register(sub, commands: dict) -> None:
    """Add the pipeline sub-commands to the parser (filled in as the stages land)."""
