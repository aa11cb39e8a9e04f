"""Training on a time budget, measured: `covidseg train` with the CPU's default budget on a 300-slice study, and
the segmenter's training speed at a few working sizes and widths (what the CPU default was chosen from).

The study: 300 half slices (256x128) of zenodo-dev volume c01 (one patient, like a study a user opens; the
validation split then holds blocks of its slices), evenly spread, as an image folder of symbolic links in a
temporary folder (images/ + labels.csv + masks/ for the report; nothing is copied). --volumes c01,c02 mixes
patients (validation is then split by volume). Skips (exit 0, a note) when ../shared/data is absent.

Usage:
  MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
  .venv/bin/python benchmarks/budget.py [--throughput] [--train] [--slices 300] [--budget MINUTES]

Prints a table of planned vs actual seconds per stage, the epochs and steps the budget chose and the total wall
time, and the throughputs in images per second as ratios to size 256 / width 24 (all settings measured in one
run, interleaved, so a busy machine slows them alike). The load average is printed with each.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ZENODO = Path(os.environ.get("COVIDSEG_SHARED", ROOT.parent / "shared")) / "data" / "zenodo-dev"
SETTINGS = ((256, 24), (256, 16), (192, 24), (192, 16), (160, 16))   # (working size, segmenter width)
MALLOC = dict(MALLOC_MMAP_THRESHOLD_="1000000000", MALLOC_TRIM_THRESHOLD_="1000000000",
              MALLOC_TOP_PAD_="268435456")


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def build_study(folder: Path, n: int, volumes: list[str]) -> Path:
    """`n` half slices of `volumes`, evenly spread, as an image folder of symbolic links."""
    with open(ZENODO / "labels.csv", newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.DictReader(fh) if r["volume"].strip() in volumes]
    keep = [rows[round(i * (len(rows) - 1) / max(n - 1, 1))] for i in range(min(n, len(rows)))]
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["file", "label", "volume"])
        for r in keep:
            name = r["file"].strip()
            out.writerow([name, r["label"].strip(), r["volume"].strip()])
            for sub in ("images", "masks"):
                (folder / sub / name).symlink_to(ZENODO / sub / name)
    return folder


def train_table(study: Path, run: Path, budget: float | None) -> None:
    cmd = [sys.executable, "-m", "covidseg_core.cli", "-q", "train", "--data", str(study), "--out", str(run),
           "--device", "cpu"] + ([] if budget is None else ["--budget", str(budget)])
    print(f"$ {' '.join(cmd[1:])}\nload average before: {load()}", flush=True)
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **MALLOC}, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        print(res.stderr[-3000:])
        raise SystemExit(f"covidseg train failed ({res.returncode})")
    metrics = json.loads((run / "metrics.json").read_text())
    plan = metrics["plan"]
    epochs = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines() if line.strip()]
    cls_s = sum(e["seconds"] for e in epochs if e["stage"] == "classifier")
    seg_s = sum(e["seconds"] for e in epochs if e["stage"] == "segmenter")
    s1, s2, actual = plan["stage1"], plan["stage2"], plan["actual_s"]
    pseudo_actual = metrics["stage1"]["seconds"] - cls_s
    report = metrics.get("ground_truth_report") or {}
    print(f"load average after: {load()}\n")
    print("| part | planned s | actual s | chosen |\n|---|---:|---:|---|")
    print(f"| stage 1: classifier epochs | {s1.get('classifier_s', '-')} | {cls_s:.1f} | {s1['epochs']} epochs "
          f"({s1['how']}; {s1.get('epoch_s', '-')} s/epoch measured) |")
    print(f"| stage 1: pseudo masks (+ setup) | {s1.get('pseudo_s', '-')} | {pseudo_actual:.1f} | |")
    print(f"| stage 1 in all (incl. measuring) | | {actual['stage1']} | |")
    print(f"| stage 2: segmenter epochs | {s2.get('segmenter_s', '-')} | {seg_s:.1f} | {s2['epochs']} epochs x "
          f"{s2['steps_per_epoch']} steps ({s2['how']}; {s2.get('step_s', '-')} s/step measured) |")
    print(f"| stage 2 in all (incl. measuring, report) | | {actual['stage2']} | report planned "
          f"{s2.get('predict_s', '-')} s |")
    print(f"| the train job | {plan['budget_s']} (budget) | {metrics['seconds']:.1f} | size {plan['size']}, "
          f"width {plan['base']} |")
    print(f"| the command, wall (start-up, loading) | | {wall:.1f} | |")
    seg = report.get("segmenter_all") or {}
    pseudo = report.get("pseudo_masks") or {}
    print(f"\nsegmenter vs ground truth on the study: dice_mean {seg.get('dice_mean', float('nan')):.3f}, "
          f"dice_pooled {seg.get('dice_pooled', float('nan')):.3f}; pseudo masks dice_mean "
          f"{pseudo.get('dice_mean', float('nan')):.3f}; warnings: {plan['warnings'] or 'none'}\n")


def throughput_table(study: Path, reps: int) -> None:
    """Segmenter training steps (batch 8, the real loss and augmentation) per setting, interleaved."""
    import numpy as np
    import torch

    from covidseg_core.data import load_slice_set
    from covidseg_core.imaging.resize import to_working_size
    from covidseg_core.models.segmenter import build_from_spec
    from covidseg_core.seg.losses import tversky_focal_loss
    from covidseg_core.seg.training import WEIGHT_DECAY, augment
    from covidseg_core.train_step import TrainStep

    slices = load_slice_set(study)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(slices), 8, replace=False)
    steps = {}
    for size, base in SETTINGS:
        x = torch.from_numpy(to_working_size(slices.images[pick], size))[:, None]
        y = (torch.from_numpy(slices.gt_masks[pick]).float()[:, None])
        y = torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="nearest")[:, 0].to(torch.uint8)
        model = build_from_spec({"name": "light", "in_ch": 1, "options": {"base": base}})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=WEIGHT_DECAY)
        step = TrainStep(model, opt, torch.device("cpu"), lambda lo, t: tversky_focal_loss(lo, t.long()),
                         augment=lambda a, b, r: augment(a, b, r, None))
        step(x, y, rng=rng)                                # warm-up
        steps[(size, base)] = (step, x, y)
    times: dict = {k: [] for k in SETTINGS}
    print(f"torch threads {torch.get_num_threads()}, load average before: {load()}", flush=True)
    for _ in range(reps):
        for k in SETTINGS:
            step, x, y = steps[k]
            t0 = time.perf_counter()
            step(x, y, rng=rng)
            times[k].append(time.perf_counter() - t0)
    ref = 8 / float(np.median(times[SETTINGS[0]]))
    print(f"load average after: {load()}\n")
    print("| working size (256x128 slices) | width | img/s (median of "
          f"{reps}) | ratio to 256/24 |\n|---|---:|---:|---:|")
    for size, base in SETTINGS:
        ips = 8 / float(np.median(times[(size, base)]))
        print(f"| {size}x{size // 2} | {base} | {ips:.2f} | {ips / ref:.2f} |")
    print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--volumes", default="c01", help="zenodo-dev volumes the study is drawn from, comma-separated")
    p.add_argument("--budget", type=float, default=None, help="minutes (default: the CPU's default budget)")
    p.add_argument("--throughput", action="store_true", help="only the throughput table")
    p.add_argument("--train", action="store_true", help="only the budgeted train run")
    p.add_argument("--reps", type=int, default=5, help="timed steps per setting (throughput)")
    p.add_argument("--keep", type=Path, default=None, help="keep the study and run in this folder")
    args = p.parse_args(argv)
    if not (ZENODO / "labels.csv").is_file():
        print(f"skipped: {ZENODO} is not here")
        return 0
    both = not (args.throughput or args.train)
    with tempfile.TemporaryDirectory(prefix="covidseg-budget-") as tmp:
        base = args.keep or Path(tmp)
        study = build_study(base / "study", args.slices, args.volumes.split(","))
        if args.throughput or both:
            throughput_table(study, args.reps)
        if args.train or both:
            train_table(study, base / "run", args.budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
