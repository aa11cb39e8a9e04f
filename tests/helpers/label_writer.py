"""Child process for the kill test: opens a project and changes it in a loop until it is killed.

Usage: python label_writer.py PROJECT_FOLDER. Prints "ready" once the project is open, then after each change
has returned the lines describing it ("saved <slice_id> <label>", "corrected <slice_id> <pixels>", "undone")
followed by "done <step>", in one flushed write. The plan is deterministic (`run_step`), so the test can replay
the same steps on a fresh project to know exactly what the killed one must contain.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CYCLE = ("infected", "clean", None)
N_SLICES = 50


def slice_name(n: int) -> str:
    return f"slice-{n % N_SLICES:03d}.png"


def run_step(project, source_id: str, i: int) -> list[str]:
    """Make change number i; return what to report once it has returned."""
    if i % 10 == 9:   # bulk: one change, several slices
        batch = {slice_name(i + k): CYCLE[(i + k) % 3] for k in range(4)}
        project.set_labels(source_id, batch)
        return [f"saved {s} {v or 'none'}" for s, v in batch.items()]
    if i % 13 == 12:
        mask = np.zeros((32, 32), np.uint8)
        mask[: i % 32 + 1, :5] = 1
        project.save_correction(source_id, slice_name(i * 7), mask)
        return [f"corrected {slice_name(i * 7)} {int(mask.sum())}"]
    if i % 17 == 16:
        before = project.labels(source_id)
        project.undo()
        after = project.labels(source_id)
        changed = sorted(s for s in set(before) | set(after) if before.get(s) != after.get(s))
        return [f"saved {s} {after.get(s) or 'none'}" for s in changed] + ["undone"]
    label = CYCLE[i % 3]
    project.set_label(source_id, slice_name(i * 7), label)
    return [f"saved {slice_name(i * 7)} {label or 'none'}"]


def main(folder: str) -> None:
    from covidseg_core.project.api import Project

    Project.compact_every = 25   # snapshots often, so kills also land inside a compaction
    project = Project.open(folder)
    source_id = project.sources[0]["id"]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for i in range(1_000_000):
        lines = run_step(project, source_id, i) + [f"done {i}"]
        sys.stdout.write("".join(line + "\n" for line in lines))   # one write: a kill cannot split it
        sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1])
