"""Stage 1's classifier on zenodo-dev, split by volume: slice AUC on the unseen volumes (and on the training ones),
for the default (lung-masked input, width 16) and the variants it replaced.

The classifier trains on the slice labels of c01-c05 (weak/job.run_stage1, fixed epochs, so the rows compare at
equal work) and is scored on c06, c07, r01, r02, r03 twice: alone (weak/scoring.classifier_probabilities) and as
the product's slice probability (weak/scoring.slice_probabilities: its mean with the label-free prior's evidence).
The prior's evidence alone (weak/prior_cue.prior_slice_evidence, no training) is a row of its own; `--shares`
adds rows for other shares of the lung field that the evidence averages over (the product's is EVIDENCE_SHARE;
a share is chosen by the AUC on the training volumes, never on the unseen ones).

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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.events import drive  # noqa: E402
from covidseg_core.results.metrics import roc_auc  # noqa: E402
from covidseg_core.weak.config import Stage1Config  # noqa: E402
from covidseg_core.weak.job import run_stage1  # noqa: E402
from covidseg_core.imaging.lung_model import compute_lung_fields  # noqa: E402
from covidseg_core.infer.predict import predict_probabilities  # noqa: E402
from covidseg_core.infer.prior_model import load_prior_model  # noqa: E402
from covidseg_core.weak.prior_cue import EVIDENCE_SHARE, top_share_mean  # noqa: E402
from covidseg_core.weak.scoring import classifier_probabilities, slice_scores  # noqa: E402
from _zenodo import DATA, TEST_VOLUMES, parse_args, split  # noqa: E402

log = logging.getLogger("bench")
SCORES_FILE = "classifier_probabilities.npz"     # a run's classifier probabilities, kept for the --shares rows
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
    p.add_argument("--shares", default=str(EVIDENCE_SHARE),
                   help="comma list of lung-field shares the prior's evidence averages its highest probabilities over")
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
            seconds = round(time.monotonic() - t0)
            on_train, train_with_prior = slice_scores(run, train.images)
            unseen, with_prior = slice_scores(run, test.images)
            np.savez(run / SCORES_FILE, train=on_train, unseen=unseen)
            results[key] = {
                "variant": name, "seed": seed, "epochs": args.epochs, "size": args.size,
                "auc_train": round(roc_auc(on_train, y_train), 4), **aucs(unseen, y_test, groups),
                "with_prior": {"auc_train": round(roc_auc(train_with_prior, y_train), 4),
                               **aucs(with_prior, y_test, groups)},
                "seconds": seconds}
            results_path.write_text(json.dumps(results, indent=2))
            log.info("%s: %s", key, results[key])
    shares = [float(x) for x in args.shares.split(",")]
    ev_train, ev_test = evidence_at(train.images, shares), evidence_at(test.images, shares)
    print("| slice probability | seeds | AUC training volumes | AUC unseen volumes | "
          + " | ".join(TEST_VOLUMES) + " |")
    print("|---|---|---|---|" + "---|" * len(TEST_VOLUMES))
    for share in shares:
        alone = {"auc_train": round(roc_auc(ev_train[share], y_train), 4), **aucs(ev_test[share], y_test, groups)}
        results[f"prior-share{share}"] = alone
        print(row(f"the label-free prior's evidence alone (top {share:.2%} of the lung; no training)", [alone]))
    results_path.write_text(json.dumps(results, indent=2))
    for name in args.variants.split(","):
        keys = [k for k, r in results.items() if r.get("variant") == name and r["epochs"] == args.epochs
                and r["size"] == args.size]
        if not keys:
            continue
        print(row(f"classifier {name} ({VARIANTS[name]}), {args.epochs} epochs", [results[k] for k in keys]))
        print(row("slice_probabilities of those runs (the product's: mean with the prior's evidence)",
                  [results[k]["with_prior"] for k in keys]))
        for share in shares:
            fused = []
            for k in keys:
                on_train, unseen = classifier_scores(args.out / k, train, test)
                fused.append({"auc_train": round(roc_auc((on_train + ev_train[share]) / 2, y_train), 4),
                              **aucs((unseen + ev_test[share]) / 2, y_test, groups)})
            print(row(f"mean of the classifier and the prior's evidence at top {share:.2%}", fused))
    return 0


def classifier_scores(run: Path, train, test) -> tuple[np.ndarray, np.ndarray]:
    """The run's classifier's probabilities of the training and unseen slices (kept in the run folder)."""
    path = run / SCORES_FILE
    if not path.is_file():
        np.savez(path, train=classifier_probabilities(run, train.images),
                 unseen=classifier_probabilities(run, test.images))
    with np.load(path) as saved:
        return saved["train"], saved["unseen"]


def evidence_at(images: np.ndarray, shares: list[float]) -> dict[float, np.ndarray]:
    """The prior's evidence (weak/prior_cue.prior_slice_evidence) of every slice at each share of its lung."""
    lungs = compute_lung_fields(images, "model")[0]
    lm, note = load_prior_model(torch.device("cpu"))
    if lm is None:
        raise SystemExit(note)
    prob = drive(predict_probabilities(lm, images))
    return {share: np.array([top_share_mean(p, lung, share) for p, lung in zip(prob, lungs)]) for share in shares}


def aucs(probs: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict:
    return {"auc_unseen": round(roc_auc(probs, y), 4),
            "auc_per_volume": {v: round(roc_auc(probs[groups == v], y[groups == v]), 4) for v in TEST_VOLUMES}}


def row(name: str, runs: list[dict]) -> str:
    if not runs:
        return f"| {name} | 0 |"
    cells = [f"{np.mean([r[k] for r in runs]):.3f}" for k in ("auc_train", "auc_unseen")]
    cells += [f"{np.nanmean([r['auc_per_volume'][v] for r in runs]):.3f}" for v in TEST_VOLUMES]
    return f"| {name} | {len(runs)} | " + " | ".join(cells) + " |"


if __name__ == "__main__":
    sys.exit(main())
