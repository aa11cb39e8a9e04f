"""Stage 1's classifier on zenodo-dev, split by volume: slice AUC on the unseen volumes (and on the training ones),
for the default (lung-masked input, width 16) and the variants it replaced.

The classifier trains on the slice labels of c01-c05 (weak/job.run_stage1, fixed epochs, so the rows compare at
equal work) and is scored by weak/scoring.classifier_probabilities on c06, c07, r01, r02, r03.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
    .venv/bin/python benchmarks/classifier_auc.py --epochs 16 --size 128 --seeds 0 --out /tmp/bench_cls
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.events import drive  # noqa: E402
from covidseg_core.results.metrics import roc_auc  # noqa: E402
from covidseg_core.weak.config import Stage1Config  # noqa: E402
from covidseg_core.weak.job import run_stage1  # noqa: E402
from covidseg_core.weak.scoring import classifier_probabilities  # noqa: E402
from _zenodo import DATA, TEST_VOLUMES, parse_args, split  # noqa: E402

log = logging.getLogger("bench")
VARIANTS = {
    "default": dict(width=16, mask_input=True),
    "no-lung-mask": dict(width=16, mask_input=False),
    "width-8": dict(width=8, mask_input=True),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_cls"))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parse_args(p, argv)
    train, test = split(load_slice_set(args.data))
    y_train = np.array([lab == "infected" for lab in train.labels])
    y_test = np.array([lab == "infected" for lab in test.labels])
    groups = np.array(test.groups)
    results_path = args.out / "results.json"
    args.out.mkdir(parents=True, exist_ok=True)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for seed in args.seeds:
        for name in args.variants.split(","):
            key = f"{name}-e{args.epochs}-s{args.size}-seed{seed}"
            if key in results:
                continue
            run = args.out / key
            t0 = time.monotonic()
            cfg = Stage1Config(cls_epochs=args.epochs, size=args.size, seed=seed, device="auto", **VARIANTS[name])
            drive(run_stage1(train, run, cfg))
            unseen = classifier_probabilities(run, test.images)
            results[key] = {
                "variant": name, "seed": seed, "epochs": args.epochs, "size": args.size,
                "auc_train": round(roc_auc(classifier_probabilities(run, train.images), y_train), 4),
                "auc_unseen": round(roc_auc(unseen, y_test), 4),
                "auc_per_volume": {v: round(roc_auc(unseen[groups == v], y_test[groups == v]), 4)
                                   for v in TEST_VOLUMES},
                "seconds": round(time.monotonic() - t0)}
            results_path.write_text(json.dumps(results, indent=2))
            log.info("%s: %s", key, results[key])
    print("| classifier | seeds | AUC training volumes | AUC unseen volumes | " + " | ".join(TEST_VOLUMES) + " |")
    print("|---|---|---|---|" + "---|" * len(TEST_VOLUMES))
    for name in args.variants.split(","):
        rows = [r for r in results.values() if r["variant"] == name and r["epochs"] == args.epochs
                and r["size"] == args.size]
        if rows:
            cells = [f"{np.mean([r[k] for r in rows]):.3f}" for k in ("auc_train", "auc_unseen")]
            cells += [f"{np.nanmean([r['auc_per_volume'][v] for r in rows]):.3f}" for v in TEST_VOLUMES]
            print(f"| {name} ({VARIANTS[name]}) | {len(rows)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
