"""What the suggestions are worth (issue 12, item 4): a radiologist labels k = 10, 20, 40, 80, 160 slices of the
zenodo-dev training volumes (c01-c05), chosen in order, at random, or by the suggestions; stage 1's classifier
trains on those labels only and is scored by its slice AUC on the unseen volumes (c06, c07, r01-r03).

The simulation (the labels are the data set's own, as the radiologist would give them):
- in order: each study gets an equal share of the labels and is labelled from the top of the volume down, both
  halves of each axial slice (what "next unlabelled" visits), the studies taken in turn: a radiologist told to
  label k slices across five patients, scrolling each. (Labelling one study to its end before opening the next
  would stay inside c01 up to k = 318; not measured.)
- at random: the first k of a random permutation of the training slices (numpy, seeded by the seed).
- suggestions (an active-learning loop): the seed set is the random strategy's first k slices at the smallest k
  (that row equals random's by construction); the classifier trained on the labels so far scores every
  unlabelled training slice, `suggest.rank_slices` ranks them (a study is a volume, its slices in file order:
  L and R half of each axial slice side by side), and the best are labelled up to the next k; then it retrains,
  from scratch, as the app's next training would.
- one rule for every strategy and k: stage 1 needs MIN_PER_CLASS slices of each label. When a strategy's first k
  picks hold fewer, the radiologist (told so by stage 1) labels the next slices of the missing kind in the
  strategy's own order instead of its latest picks of the other kind (k stays k; the row says how many were
  swapped). Where even that cannot give both kinds the row says "cannot train".
- reference: the classifier trained on the label of every training slice (1,252).
- the AUC is of the product's slice probability: by default (`--slice-score classifier+prior`) the mean of the
  classifier's probability and the label-free prior's evidence (weak/prior_cue.prior_slice_evidence, computed
  once: it needs no labels); `--slice-score classifier` gives the classifier's alone, as in stops before 30
  (docs/measurements/label_order*.json). The suggestions always rank by the classifier's own probability, as
  suggest.py does: labels teach the classifier, never the prior.

Every classifier is stage 1's own (weak/classifier_training.train_classifier, the function weak/job.run_stage1
trains with) on the same input the job gives it (working size, learned lung field and its margin, computed once
for every slice), at the stage-1 defaults, a FIXED number of epochs for every row (30: the product's fixed
schedule, and what the CPU budget gives a small label set), so results do not depend on machine load. The
segmenter is not trained. Pseudo-mask Dice: stage 1's CAM pseudo masks (the paper's cue, as weak/job makes them)
of the labelled infected slices against the ground truth (Dice mean over slices with infection); each row's own
labelled slices, so rows compare classifiers' CAMs on different slices.

Full run: 5 k x 3 strategies x 2 seeds + the reference x 2 seeds, about 15 min on an idle 2-core CPU (an epoch on
all 1,252 slices took 7 s there: the reference rows are half of it), about twice that on a busy one.
OUT/results.json keeps finished rows; a re-run skips those that labelled the same slices:
  MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
  nice -n 15 .venv/bin/python benchmarks/label_order.py --out /tmp/bench_label_order --report /tmp/label_order.md
Smoke run (half a minute):  ... benchmarks/label_order.py --epochs 2 --ks 10 20 --seeds 0 --volumes c01,c04 \\
      --out /tmp/bench_label_order_smoke
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

from covidseg_core.constants import FOREGROUND, SLICE_SCORES  # noqa: E402
from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.events import drive  # noqa: E402
from covidseg_core.imaging.lung_model import compute_lung_fields  # noqa: E402
from covidseg_core.imaging.resize import to_shape, upsample_maps  # noqa: E402
from covidseg_core.infer.device import resolve_device  # noqa: E402
from covidseg_core.results.metrics import roc_auc, summarize  # noqa: E402
from covidseg_core.suggest import EXPLORE, rank_slices  # noqa: E402
from covidseg_core.weak.classifier_training import compute_cams, train_classifier  # noqa: E402
from covidseg_core.weak.config import MIN_PER_CLASS, Stage1Config  # noqa: E402
from covidseg_core.weak.job import cam_pseudo_mask, classifier_inputs, study_clean_levels  # noqa: E402
from covidseg_core.weak.prior_cue import prior_slice_evidence  # noqa: E402
from _zenodo import DATA, TEST_VOLUMES, TRAIN_VOLUMES, parse_args, split  # noqa: E402

log = logging.getLogger("bench")
KS = (10, 20, 40, 80, 160)
STRATEGIES = {"order": "in order", "random": "at random", "suggest": "suggestions"}


# --- who labels what (pure: tests/test_label_order.py) ------------------------------------------------------------

def volume_positions(ids: list[str], groups: list[str]) -> dict[str, list[int]]:
    """Volume -> its slices' indices in file order (the order of the volume's slices, L before R half)."""
    out: dict[str, list[int]] = {}
    for i in sorted(range(len(ids)), key=lambda i: ids[i]):
        out.setdefault(groups[i], []).append(i)
    return dict(sorted(out.items()))


def in_order(positions: dict[str, list[int]]) -> list[int]:
    """Every slice, the volumes taken in turn, each from its top down: the first k give each volume k/5."""
    lists = list(positions.values())
    return [lst[t] for t in range(max(map(len, lists), default=0)) for lst in lists if t < len(lst)]


def at_random(n: int, seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


def first_k(order: list[int], k: int, infected: np.ndarray) -> tuple[list[int], int]:
    """The first k of `order`, with the latest picks of one kind swapped for the next ones of the other (in
    `order`) until each kind has MIN_PER_CLASS where that can be done; (picks, how many were swapped)."""
    picks, swapped = list(order[:k]), 0
    for kind in (True, False):
        later = iter([i for i in order[k:] if bool(infected[i]) == kind])
        while sum(bool(infected[i]) == kind for i in picks) < MIN_PER_CLASS:
            others = [j for j, i in enumerate(picks) if bool(infected[i]) != kind]
            nxt = next(later, None)
            if nxt is None or len(others) <= MIN_PER_CLASS:
                return picks, swapped
            picks.pop(others[-1])
            picks.append(nxt)
            swapped += 1
    return picks, swapped


def trainable(picks: list[int], infected: np.ndarray) -> bool:
    n_inf = int(sum(bool(infected[i]) for i in picks))
    return n_inf >= MIN_PER_CLASS and len(picks) - n_inf >= MIN_PER_CLASS


def suggested(probs: np.ndarray, labelled: list[int], positions: dict[str, list[int]], n: int,
              explore: float = EXPLORE) -> list[int]:
    """The n slices `rank_slices` suggests next, as indices; `probs`: the classifier's probability of every slice
    (those of labelled slices are not used)."""
    done = set(labelled)
    candidates = {}
    for vol, idx in positions.items():
        mine = {p for p, i in enumerate(idx) if i in done}
        candidates[vol] = {"probabilities": np.asarray(probs, float)[idx], "labelled": mine, "n_labelled": len(mine)}
    return [positions[p["source_id"]][p["index"]] for p in rank_slices(candidates, n, explore)]


# --- training and scoring ---------------------------------------------------------------------------------------

def prepared(images: np.ndarray, size: int, with_prior: bool, device) -> tuple[np.ndarray, ...]:
    """(working-size images, lung fields at that size, what the classifier sees, the prior's evidence or None)
    as weak/job and weak/scoring make them, with the learned lung field of every slice."""
    native_lungs = compute_lung_fields(images, "model")[0]
    work, lungs, seen = classifier_inputs(images, native_lungs, size)
    evidence = prior_slice_evidence(images, native_lungs, device) if with_prior else None
    return work, lungs, np.ascontiguousarray(seen, dtype=np.float32), evidence


def with_evidence(probs: np.ndarray, evidence: np.ndarray | None) -> np.ndarray:
    """The product's slice probability (weak/scoring.slice_probabilities) from the classifier's."""
    return probs if evidence is None else (probs + evidence) / 2


class Bench:
    def __init__(self, args):
        self.args, self.device = args, resolve_device(args.device)
        train, self.test = split(load_slice_set(args.data))
        self.train = train.subset(np.flatnonzero(np.isin(train.groups, args.volumes)))
        self.infected = np.array([lab == "infected" for lab in self.train.labels])
        self.y_test = np.array([lab == "infected" for lab in self.test.labels])
        self.positions = volume_positions(self.train.ids, self.train.groups)
        self.row_of = {sid: i for i, sid in enumerate(self.train.ids)}
        t0 = time.monotonic()
        with_prior = args.slice_score == "classifier+prior"
        self.work, self.lungs, self.seen, _ = prepared(self.train.images, args.size, False, self.device)
        _, _, self.seen_test, self.evidence_test = prepared(self.test.images, args.size, with_prior, self.device)
        log.info("%d training slices (%s), %d unseen; inputs ready in %.0f s", len(self.train),
                 ",".join(args.volumes), len(self.test), time.monotonic() - t0)
        args.out.mkdir(parents=True, exist_ok=True)
        self.path = args.out / "results.json"
        self.results = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def key(self, row: str, seed: int) -> str:
        vols = "" if tuple(self.args.volumes) == TRAIN_VOLUMES else "-" + "+".join(self.args.volumes)
        score = "" if self.args.slice_score == "classifier" else "-with-prior"
        explore = f"-x{self.args.explore:g}" if row.startswith("suggest") and self.args.explore != EXPLORE else ""
        return f"{row}-seed{seed}-e{self.args.epochs}-s{self.args.size}{vols}{score}{explore}"

    def save(self, key: str, record: dict) -> None:
        self.results[key] = record
        self.path.write_text(json.dumps(self.results, indent=2))

    def config(self, seed: int):
        return Stage1Config(cls_epochs=self.args.epochs, size=self.args.size, seed=seed, device=self.device.type,
                            cue="cam")

    def fit(self, picks: list[int], seed: int) -> tuple[dict, object]:
        """Stage 1's classifier on the labels of `picks`: its scores and the model."""
        idx = np.array(sorted(picks), dtype=int)
        cfg = self.config(seed)
        model, bank, history = drive(train_classifier(self.seen[idx], [self.train.labels[i] for i in idx], cfg,
                                                      self.device))
        unseen = with_evidence(compute_cams(model, self.seen_test, self.device)[0], self.evidence_test)
        groups = np.array(self.test.groups)
        return {"auc_unseen": round(roc_auc(unseen, self.y_test), 4),
                "auc_per_volume": {v: round(roc_auc(unseen[groups == v], self.y_test[groups == v]), 4)
                                   for v in TEST_VOLUMES},
                "train_auc": round(history[-1]["auc"], 4),
                **self.pseudo_dice(idx, bank.fused(cfg.fusion), cfg)}, model

    def pseudo_dice(self, idx: np.ndarray, fused: np.ndarray, cfg) -> dict:
        """Stage 1's CAM pseudo masks of the labelled infected slices (weak/job.cam_pseudo_mask, at the
        slice's own size) against the ground truth."""
        work, lungs, sub = self.work[idx], self.lungs[idx], self.train.subset(idx)
        levels = study_clean_levels(sub, work, lungs, cfg)
        native = tuple(sub.images.shape[1:])
        preds, gts = [], []
        for k, i in enumerate(sub.indices("infected")):
            mask = cam_pseudo_mask(work[i], upsample_maps(fused[k], tuple(work.shape[1:])), lungs[i], cfg, levels,
                                   sub.groups[i])
            preds.append(to_shape(mask, native, nearest=True) == FOREGROUND)
            gts.append(sub.gt_masks[i] > 0)
        report = summarize(preds, gts)
        return {"pseudo_dice_mean": round(report["dice_mean"], 4),
                "pseudo_dice_pooled": round(report["dice_pooled"], 4)}

    def probabilities(self, model) -> np.ndarray:
        """The classifier's probability of every training slice: what the suggestions rank by."""
        return compute_cams(model, self.seen, self.device)[0]

    def run(self, strategy: str, seed: int) -> None:
        """Every k of one strategy and seed; the suggestions' rows build on each other (the labels of the row
        before, plus what its classifier suggested). A stored row is kept when it labelled the same slices (and,
        for the suggestions, holds what the next k needs)."""
        ks, random_order = sorted(self.args.ks), at_random(len(self.train), seed)
        order = in_order(self.positions) if strategy == "order" else random_order
        prev = None
        for step, k in enumerate(ks):
            key, nxt = self.key(f"{strategy}-k{k}", seed), ks[step + 1] if step + 1 < len(ks) else None
            if strategy == "suggest" and prev is not None:
                ids = prev["labelled"] + prev["next"][:k - len(prev["labelled"])]
                picks, swapped = [self.row_of[s] for s in ids], 0
            else:
                picks, swapped = first_k(order, k, self.infected)
            done = self.results.get(key)
            if done and done["labelled"] == [self.train.ids[i] for i in picks] and (
                    strategy != "suggest" or nxt is None or len(done.get("next", [])) >= nxt - k):
                prev = done
                continue
            prev = self.one(strategy, seed, k, picks, swapped, prev, nxt, random_order)
            self.save(key, prev)

    def one(self, strategy, seed, k, picks, swapped, prev, nxt, random_order) -> dict:
        t0 = time.monotonic()
        n_inf = int(self.infected[picks].sum())
        record = {"strategy": strategy, "k": k, "seed": seed, "epochs": self.args.epochs, "size": self.args.size,
                  "infected": n_inf, "clean": len(picks) - n_inf, "swapped": swapped,
                  "prev_k": None if prev is None else prev["k"], "labelled": [self.train.ids[i] for i in picks]}
        model = None
        if trainable(picks, self.infected):
            scores, model = self.fit(picks, seed)
            record.update(status="ok", **scores)
        else:
            record.update(status="cannot train")
        if strategy == "suggest" and nxt is not None:
            if model is None:      # nothing to suggest with: the radiologist goes on at random
                more = [i for i in random_order if i not in set(picks)][:nxt - k]
            else:
                more = suggested(self.probabilities(model), picks, self.positions, nxt - k, self.args.explore)
            record["next"] = [self.train.ids[i] for i in more]
            record["next_by"] = "random" if model is None else "suggestions"
        record["seconds"] = round(time.monotonic() - t0, 1)
        log.info("%s k=%d seed %d: %s AUC %s Dice %s (%d infected, %d clean, %d swapped) %.0f s", strategy, k,
                 seed, record["status"], record.get("auc_unseen"), record.get("pseudo_dice_mean"), n_inf,
                 record["clean"], swapped, record["seconds"])
        return record

    def reference(self, seed: int) -> None:
        key = self.key("reference", seed)
        if key in self.results:
            return
        t0 = time.monotonic()
        scores, _ = self.fit(list(range(len(self.train))), seed)
        n_inf = int(self.infected.sum())
        record = {"strategy": "reference", "k": len(self.train), "seed": seed, "epochs": self.args.epochs,
                  "size": self.args.size, "infected": n_inf, "clean": len(self.train) - n_inf, "status": "ok",
                  **scores, "seconds": round(time.monotonic() - t0, 1)}
        log.info("reference seed %d: AUC %s Dice %s, %.0f s", seed, scores["auc_unseen"], scores["pseudo_dice_mean"],
                 record["seconds"])
        self.save(key, record)


# --- the table ----------------------------------------------------------------------------------------------------

def _cell(records: list[dict], metric: str) -> str:
    """Mean over seeds and each seed's value, '-' where a seed could not train."""
    if not records:
        return ""
    values = [r.get(metric) if r.get("status") == "ok" else None for r in records]
    ok = [v for v in values if v is not None]
    if not ok:
        return "cannot train"
    each = "/".join("-" if v is None else f"{v:.3f}" for v in values)
    return f"{np.mean(ok):.3f}" + (f" ({each})" if len(values) > 1 else "")


def _verdict(rows: dict, reference: list[dict], ks: list[int], seeds: list[int]) -> list[str]:
    """The issue's two targets, as measured (nothing is tuned to meet them)."""
    out = []
    if reference:
        ref = float(np.mean([r["auc_unseen"] for r in reference]))
        reach = [k for k in ks if len(rows[("suggest", k)]) == len(seeds)
                 and np.mean([r.get("auc_unseen") or np.nan for r in rows[("suggest", k)]]) >= ref]
        out.append(f"- suggestions (mean over seeds) reach the reference AUC {ref:.3f} at k = "
                   + (", ".join(map(str, reach)) if reach else f"none up to {max(ks)}")
                   + f" (half the labels: {reference[0]['k'] / 2:.0f})")
    beats = []
    for k in ks:
        pairs = [(s.get("auc_unseen"), r.get("auc_unseen")) for s, r in zip(rows[("suggest", k)], rows[("random", k)])]
        if len(pairs) == len(seeds):
            won = sum(s is not None and (r is None or s > r) for s, r in pairs)
            beats.append(f"k={k}: {won}/{len(pairs)}")
    if beats:
        out.append("- suggestions beat random (seeds where the AUC is higher): " + ", ".join(beats))
    return out


def table(results: dict, bench_key, ks: list[int], seeds: list[int], strategies: list[str]) -> str:
    rows = {(s, k): [results[key] for seed in seeds if (key := bench_key(f"{s}-k{k}", seed)) in results]
            for s in strategies for k in ks}
    reference = [results[key] for seed in seeds if (key := bench_key("reference", seed)) in results]
    names = [STRATEGIES[s] for s in strategies]
    lines = ["| labelled slices | " + " | ".join(f"AUC unseen, {n}" for n in names) + " | "
             + " | ".join(f"pseudo Dice, {n}" for n in names) + " |",
             "|---|" + "---|" * (2 * len(names))]
    for k in ks:
        lines.append(f"| {k} | " + " | ".join(_cell(rows[(s, k)], "auc_unseen") for s in strategies) + " | "
                     + " | ".join(_cell(rows[(s, k)], "pseudo_dice_mean") for s in strategies) + " |")
    if reference:
        lines.append(f"| all {reference[0]['k']} (reference) | " + " | ".join(
            [_cell(reference, "auc_unseen")] + [""] * (len(names) - 1) + [_cell(reference, "pseudo_dice_mean")]
            + [""] * (len(names) - 1)) + " |")
    if "suggest" in strategies and "random" in strategies:
        lines += [""] + _verdict(rows, reference, ks, seeds)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_label_order"))
    p.add_argument("--ks", type=int, nargs="+", default=list(KS))
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=30, help="classifier epochs, the same for every row")
    p.add_argument("--size", type=int, default=128, help="working size (the CPU default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--slice-score", choices=SLICE_SCORES, default=SLICE_SCORES[0],
                   help="the slice probability the AUC and the suggestions use (weak/scoring.py)")
    p.add_argument("--explore", type=float, default=EXPLORE,
                   help="suggest.rank_slices' weight of spread against uncertainty (the product's default)")
    p.add_argument("--volumes", default=",".join(TRAIN_VOLUMES), help="training volumes (a subset: smoke runs)")
    p.add_argument("--no-reference", action="store_true", help="skip the row trained on every slice's label")
    p.add_argument("--report", type=Path, help="also write the markdown table here")
    args = parse_args(p, argv)
    args.volumes = [v for v in TRAIN_VOLUMES if v in args.volumes.split(",")]
    strategies = [s for s in args.strategies.split(",") if s in STRATEGIES]
    bench, t0 = Bench(args), time.monotonic()
    for seed in args.seeds:
        for strategy in strategies:
            bench.run(strategy, seed)
        if not args.no_reference:
            bench.reference(seed)
    log.info("all rows done in %.0f s", time.monotonic() - t0)
    text = (f"Classifier epochs {args.epochs}, size {args.size}, seeds {' '.join(map(str, args.seeds))}, training "
            f"volumes {','.join(args.volumes)}, slice score {args.slice_score}; AUC: mean (each seed).\n\n"
            + table(bench.results, bench.key, sorted(args.ks), args.seeds, strategies))
    if args.report:
        args.report.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
