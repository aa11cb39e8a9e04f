"""How `covidseg train` scales under torchrun: the same command with 1, 2, ... processes, one after the other in one
invocation (ratios measured in one run are what compare on a shared machine), and per process count the seconds
of a classifier epoch and of a segmenter epoch (RUN/epochs.jsonl; an epoch is one pass over the same slices, so
the ratio of epoch seconds is the ratio of slices per second) and the whole job's wall time.

  benchmarks/torchrun_scaling.py --out out/scaling [--procs 1,2] [--data DIR | --demo-slices 32 --demo-size 96]
  benchmarks/torchrun_scaling.py --out out/scaling --procs 1,2,4,8 --device cuda --data DIR    (one process per GPU)
  benchmarks/torchrun_scaling.py --out out/spread --procs 1,2 --seeds 0,1,2,3 --threads 1 --fast \
      --demo-slices 16 --demo-size 64 --size 64 --cls-epochs 12 --seg-epochs 12 [--same-steps]

With --seeds each process count trains once per seed, and the Dice of each run on the ground truth (the run's own
report, all slices) is summarised per process count (min / mean / max): whether N processes reach the spread of
repeated one-process runs. --same-steps gives N processes N times the epochs (each epoch is 1/N of the steps).

Each process gets OMP_NUM_THREADS = cores // processes on the CPU (torchrun's default is 1), so 1 and N processes
use the same cores (--threads sets it for all). The first segmenter epoch (warm-up) is left out of the mean when
there are more.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def epoch_seconds(run: Path, stage: str) -> float | None:
    rows = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines() if line.strip()]
    secs = [r["seconds"] for r in rows if r.get("stage") == stage]
    secs = secs[1:] if len(secs) > 1 else secs
    return round(statistics.mean(secs), 3) if secs else None


def train(n: int, args, data: Path, out: Path, seed: int = 0) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(args.threads or max(1, (os.cpu_count() or 1) // n))
    epochs = n if args.same_steps else 1
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           "-m", "covidseg_core", "--quiet", "train", "--data", str(data), "--out", str(out), "--device", args.device,
           "--size", str(args.size), "--cls-epochs", str(args.cls_epochs * epochs),
           "--seg-epochs", str(args.seg_epochs * epochs), "--seed", str(seed), *(["--fast"] if args.fast else [])]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{n} process(es) failed:\n{done.stderr[-3000:]}")
    report = (json.loads(done.stdout).get("ground_truth_report") or {}).get("segmenter_all") or {}
    return {"processes": n, "seed": seed, "wall_s": round(wall, 1),
            "classifier_epoch_s": epoch_seconds(out, "classifier"),
            "segmenter_epoch_s": epoch_seconds(out, "segmenter"), "dice_mean_all_slices": report.get("dice_mean")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the demo study and the runs (made)")
    p.add_argument("--procs", default="1,2", help="process counts, comma-separated")
    p.add_argument("--data", type=Path, default=None, help="a data set (default: the demo study written to --out)")
    p.add_argument("--demo-slices", type=int, default=32)
    p.add_argument("--demo-size", type=int, default=96)
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one process per GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process on the CPU (default: cores // processes)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--cls-epochs", type=int, default=2)
    p.add_argument("--seg-epochs", type=int, default=3)
    p.add_argument("--seeds", default="0", help="seeds, comma-separated: each process count trains once per seed")
    p.add_argument("--fast", action="store_true", help="the --fast preset (its epochs replaced by the ones given)")
    p.add_argument("--same-steps", action="store_true", help="N processes train N x the epochs (the same steps)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        sys.path.insert(0, str(ROOT))
        from covidseg_core.demo import write_demo

        data = args.out / "demo"
        if not data.exists():
            write_demo(data, n_slices=args.demo_slices, size=args.demo_size)
    rows, procs, seeds = [], [int(x) for x in args.procs.split(",")], [int(x) for x in args.seeds.split(",")]
    for seed in seeds:
        for n in procs:
            out = args.out / (f"run-{n}" if len(seeds) == 1 else f"run-{n}-s{seed}")
            if out.exists():
                raise SystemExit(f"{out} exists: choose a new --out (a resumed run would time nothing)")
            rows.append(train(n, args, data, out, seed))
    for seed in seeds:
        base = next(r for r in rows if r["seed"] == seed)
        for r in (r for r in rows if r["seed"] == seed):
            for key in ("classifier_epoch_s", "segmenter_epoch_s"):
                if base[key] and r[key]:
                    r[key.replace("epoch_s", "speedup")] = round(base[key] / r[key], 2)
    dice = {n: [r["dice_mean_all_slices"] for r in rows
                if r["processes"] == n and r["dice_mean_all_slices"] is not None] for n in procs}
    spread = {n: {"min": round(min(d), 4), "mean": round(statistics.mean(d), 4), "max": round(max(d), 4)}
              for n, d in dice.items() if d}
    print(json.dumps({"runs": rows, "dice_mean_by_processes": spread}, indent=2))


if __name__ == "__main__":
    main()
