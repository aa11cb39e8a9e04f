"""What drawing synthetic lesions costs the segmenter's training, and what worker processes that draw them ahead
of the steps (`covidseg train --data-workers N`, synth/workers.py) give back.

One study's clean slices (a zenodo-dev volume by default, or any --data with clean labels) feed a SyntheticSource
as `covidseg train` builds it (its learned lung fields, the study's levels); the segmenter of a default run (the
light network, width 16, size 128 on a CPU; --size and --base change it) trains a fixed number of steps at the
default synthetic share of `only` (80 % of the samples) with 0, 1, ... workers, all in one run, so the ratios
compare like with like. Also timed: drawing alone (pairs per second in this process) and the same steps with no
synthetic pair at all (the network alone). The same script runs on a GPU (--device cuda), where it matters most:
there a step takes less time than drawing its pairs.

  MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
    .venv/bin/python benchmarks/synthetic_workers.py --workers 0,1,2 [--volume c04] [--steps 40] [--repeats 3]
    [--device cuda]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.events import EpochReport, Progress, drive  # noqa: E402
from covidseg_core.imaging.lung_model import compute_lung_fields  # noqa: E402
from covidseg_core.imaging.resize import working_shape  # noqa: E402
from covidseg_core.infer.device import resolve_device  # noqa: E402
from covidseg_core.runs import RunFolder  # noqa: E402
from covidseg_core.seg.training import prepare_segmenter_data, train_segmenter  # noqa: E402
from covidseg_core.synth.source import SyntheticSource  # noqa: E402
from covidseg_core.synth.study import SHARE  # noqa: E402
from covidseg_core.train_config import TrainConfig  # noqa: E402
from _zenodo import DATA  # noqa: E402

log = logging.getLogger("bench")


def timed_steps(data, cfg: TrainConfig, device) -> float:
    """Seconds per step of the second of two epochs (the first warms up, and starts the workers), drawing
    included; the epoch's checkpoint is in it too, the same in every row."""
    seconds, steps = [], [0]

    def on_event(event) -> None:
        if isinstance(event, Progress) and event.stage == "segmenter":
            steps[-1] += 1
        elif isinstance(event, EpochReport):
            seconds.append(event.seconds)
            steps.append(0)

    with tempfile.TemporaryDirectory(prefix="covidseg-bench-") as tmp:
        run = RunFolder(Path(tmp) / "run")
        run.create({"bench": True}, {}, str(device))
        drive(train_segmenter(data, cfg, run, device), on_event)
    return seconds[-1] / steps[-2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--volume", default="c04", help="the study: one volume of --data (its `volume` column)")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--steps", type=int, default=40, help="timed steps (one epoch of them after a warm-up one)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all rows (the median is reported)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = resolve_device(args.device)
    slices = load_slice_set(args.data)
    if args.volume:
        slices = slices.subset(np.flatnonzero(np.array(slices.groups) == args.volume))
    clean = np.array([lab == "clean" for lab in slices.labels])
    lungs, _ = compute_lung_fields(slices.images[clean], "model", device=device)
    shape = slices.images.shape[1:]
    source = SyntheticSource(slices.images[clean], lungs, seed=0, work_shape=working_shape(*shape, args.size))
    targets = np.zeros(slices.images.shape, np.uint8)
    idx = np.flatnonzero(clean)

    started = time.perf_counter()
    source.epoch_pairs(1, 64)
    draw_s = (time.perf_counter() - started) / 64

    base = TrainConfig(size=args.size, base=args.base, seg_epochs=2, steps_per_epoch=args.steps, init="none")
    plain = prepare_segmenter_data(slices.images, targets, idx, np.zeros(0, int), args.size)
    with_pairs = dataclasses.replace(plain, synthetic=source, synthetic_share=SHARE["only"])
    cases = {"no synthetic pair (the network alone)": (plain, base)}
    cases |= {f"`only`'s pairs, {n} worker(s)": (with_pairs, dataclasses.replace(base, data_workers=n))
              for n in (int(w) for w in args.workers.split(","))}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.repeats):          # the rows in turn, so a busy spell of the machine hits them all
        for name, (data, cfg) in cases.items():
            times[name].append(timed_steps(data, cfg, device))
            log.info("round %d, %s: %.3f s per step", r + 1, name, times[name][-1])
    rows = [(name, float(np.median(t)), min(t), max(t)) for name, t in times.items()]
    pairs_per_step = base.batch_size * SHARE["only"]
    print(f"Study {args.volume or args.data}: {int(clean.sum())} clean slices of {shape[0]}x{shape[1]}, device "
          f"{device}, torch threads {torch.get_num_threads()}, size {args.size}, width {args.base}, batch "
          f"{base.batch_size}. Drawing alone: {draw_s * 1000:.1f} ms per pair in this process, "
          f"{draw_s * pairs_per_step:.3f} s for one step's {pairs_per_step:.1f} pairs.\n")
    print(f"| segmenter steps | s per step, median of {args.repeats} (range) | vs no synthetic pair |")
    print("|---|---|---|")
    for name, med, low, high in rows:
        print(f"| {name} | {med:.3f} ({low:.3f}-{high:.3f}) | {med / rows[0][1]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
