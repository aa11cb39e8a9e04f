"""Stage-2 benchmark on zenodo-dev, split by volume: the segmenter trained on pseudo masks vs ground truth.

Train volumes c01-c05, test volumes c06, c07, r01, r02, r03 (never seen by any training, stage 1 included).
Experiments (run in this order; each one's table is written as soon as it finishes):

  fusion   Table 2/3 analog: held-out Dice/sens/spec of the segmenter trained on pseudo masks from plain CAM
           (none), max and avg fusion, and of the same net trained on the ground-truth masks (ceiling); plus
           whether the segmenter beats its own pseudo masks on the training images.
  ablation Table 5 analog, all trained on ground-truth masks: baseline, +FE, +FE+RC, +FE+RC+MDPPM (the full
           light net), and ASPP instead of MDPPM.
  kslices  weak labels + ground-truth pixel masks of k training slices (k = 0, 5, 10, 20, 50, all infected),
           on the avg-fusion pseudo masks, and one round of self-training (the avg-fusion segmenter's own
           predictions on the training slices as new targets, uncertain pixels ignored).

Usage (reduced epochs on a shared CPU; the defaults of `covidseg train` are larger):
  MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
  OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/train_eval.py --data ../shared/data/zenodo-dev \\
      --out out/bench_stage2 --experiments fusion,ablation,kslices --size 128 --cls-epochs 6 --seg-epochs 4

Results: OUT/results.json (appended per run; re-running skips finished runs) and the markdown tables in
--report (default docs/results_stage2.md).
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
from covidseg_core.infer.model import load_run_model  # noqa: E402
from covidseg_core.infer.predict import predict_probabilities  # noqa: E402
from covidseg_core.constants import IGNORE  # noqa: E402
from covidseg_core.pipeline import train_job, train_on_targets  # noqa: E402
from covidseg_core.seg.targets import build_targets  # noqa: E402
from covidseg_core.train_config import TrainConfig  # noqa: E402
from _zenodo import TEST_VOLUMES, TRAIN_VOLUMES, scores  # noqa: E402

log = logging.getLogger("bench")

KEYS = ("dice_mean", "sensitivity_mean", "specificity_mean", "dice_pooled", "sensitivity_pooled",
        "specificity_pooled")


def evaluate_run(run: Path, test) -> dict:
    return scores(run, test)


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.is_file() else {}
        everything = load_slice_set(args.data)
        vols = np.array(everything.groups)
        self.train = everything.subset(np.flatnonzero(np.isin(vols, TRAIN_VOLUMES)))
        self.test = everything.subset(np.flatnonzero(np.isin(vols, TEST_VOLUMES)))
        log.info("train %d slices %s, test %d slices %s", len(self.train), self.train.counts(), len(self.test),
                 self.test.counts())

    def cfg(self, **kw) -> TrainConfig:
        a = self.args
        return TrainConfig(**{**dict(size=a.size, cls_epochs=a.cls_epochs, seg_epochs=a.seg_epochs, seed=a.seed,
                                     batch_size=a.batch_size, lr=a.lr, base=a.base,
                                     steps_per_epoch=a.steps_per_epoch), **kw})

    def save(self, key: str, value: dict) -> None:
        self.results[key] = value
        self.results_path.write_text(json.dumps(self.results, indent=2, default=float))

    def gt_targets(self, slices) -> np.ndarray:
        return slices.gt_masks.astype(np.uint8)

    # --- runs ----------------------------------------------------------------------------------------------
    def weak_run(self, key: str, **cfg_kw) -> dict:
        if key in self.results:
            return self.results[key]
        t0 = time.monotonic()
        metrics = drive(train_job(self.args.data, self.out / key, self.cfg(**cfg_kw), slices=self.train),
                        _log_epochs)
        rep = metrics["ground_truth_report"]
        value = {"test": evaluate_run(self.out / key, self.test), "train_pseudo": rep.get("pseudo_masks"),
                 "train_segmenter_same_images": rep.get("segmenter_on_pseudo_slices"),
                 "stage1_seconds": metrics["stage1"].get("seconds"), "seconds": round(time.monotonic() - t0, 1),
                 "best_epoch": metrics["segmenter"]["best_epoch"]}
        self.save(key, value)
        return value

    def target_run(self, key: str, targets: np.ndarray, note: str, always_train=None, **cfg_kw) -> dict:
        if key in self.results:
            return self.results[key]
        t0 = time.monotonic()
        metrics = drive(train_on_targets(self.train, targets, self.out / key, self.cfg(**cfg_kw), note=note,
                                         always_train=always_train), _log_epochs)
        value = {"test": evaluate_run(self.out / key, self.test), "seconds": round(time.monotonic() - t0, 1),
                 "best_epoch": metrics["segmenter"]["best_epoch"]}
        from covidseg_core.infer.model import load_run_model as _load
        value["parameters"] = _load(self.out / key, "cpu").model.num_parameters()
        self.save(key, value)
        return value

    # --- experiments -----------------------------------------------------------------------------------------
    def fusion(self) -> None:
        for fusion in ("none", "max", "avg"):
            self.weak_run(f"weak_{fusion}", fusion=fusion)
        self.target_run("gt_light", self.gt_targets(self.train), "ground-truth masks of c01-c05")

    def ablation(self) -> None:
        for name in ("baseline", "fe", "fe_rc", "fe_rc_mdppm", "fe_rc_aspp"):
            self.target_run(f"gt_{name}", self.gt_targets(self.train), "ground-truth masks of c01-c05",
                            model=name)

    def kslices(self) -> None:
        base = self.weak_run("weak_avg", fusion="avg")      # also gives the pseudo masks
        pseudo_dir = self.out / "weak_avg" / "pseudo"
        infected = self.train.indices("infected")
        rng = np.random.default_rng(self.args.seed)
        order = infected[rng.permutation(len(infected))]
        pseudo, _, _ = build_targets(self.train, pseudo_dir, None)
        gt = self.gt_targets(self.train)
        for k in (5, 10, 20, 50, len(order)):
            chosen = order[:k]
            targets = pseudo.copy()
            targets[chosen] = gt[chosen]
            pixel = np.zeros(len(self.train), dtype=bool)
            pixel[chosen] = True        # as in `covidseg train --pixel-labels`: these slices always train
            self.target_run(f"k_{k}", targets, f"avg pseudo masks + ground truth of {k} infected slices",
                            always_train=pixel)
        # one round of self-training: the avg segmenter's predictions as targets, uncertain pixels ignored,
        # clean-labelled slices kept all background
        if "self_training" not in self.results:
            lm = load_run_model(self.out / "weak_avg", "auto")
            prob = drive(predict_probabilities(lm, self.train.images))
            targets = np.full(prob.shape, IGNORE, dtype=np.uint8)
            targets[prob < 0.3] = 0
            targets[prob >= 0.7] = 1
            for i in self.train.indices("clean"):
                targets[i] = 0
            self.target_run("self_training", targets, "one self-training round on the avg segmenter")
        self.results.setdefault("k_0", base)

    # --- report ----------------------------------------------------------------------------------------------
    def report(self, command: str) -> str:
        r = self.results
        a = self.args
        lines = ["# Stage 2 results: the segmenter on zenodo-dev (held-out volumes)", "",
                 "Split by volume: train c01-c05 (%d slices, %s), test c06, c07, r01, r02, r03 (%d slices, %s). "
                 % (len(self.train), self.train.counts(), len(self.test), self.test.counts()),
                 "Ground-truth masks of the test volumes are used for scoring only; the weak runs never see any "
                 "ground truth. `_mean` = mean over test images whose ground truth has infection, `_pooled` = "
                 "over all pixels of all test images.", "",
                 f"**Reduced schedule** (2-core shared CPU): size {a.size}, {a.cls_epochs} classifier epochs, "
                 f"{a.seg_epochs} segmenter epochs of at most {a.steps_per_epoch or 'all'} batches, batch {a.batch_size}, lr {a.lr}, seed {a.seed}, width "
                 f"{a.base or 'default'}. The `covidseg train` defaults are 30/40 epochs at size 256; these numbers "
                 "are for comparing rows with each other, not the method's ceiling.", "",
                 "Command:", "", "```", command, "```", ""]

        def row(name, res):
            t = res["test"]
            return "| " + name + " | " + " | ".join(f"{t[k]:.3f}" for k in KEYS) + f" | {res.get('seconds', '')} |"

        head = "| run | " + " | ".join(KEYS) + " | train s |"
        sep = "|" + "---|" * (len(KEYS) + 2)
        if any(k in r for k in ("weak_none", "weak_max", "weak_avg", "gt_light")):
            lines += ["## Table 2/3 analog: pseudo-mask source -> segmenter (test volumes)", "", head, sep]
            for key, name in (("weak_none", "plain CAM (no fusion)"), ("weak_max", "max fusion"),
                              ("weak_avg", "avg fusion"), ("gt_light", "ground-truth masks (ceiling)")):
                if key in r:
                    lines.append(row(name, r[key]))
            lines += ["", "Does the segmenter beat its own pseudo masks? Same training images (c01-c05), "
                      "against their ground truth:", "",
                      "| fusion | pseudo dice_mean | segmenter dice_mean | pseudo dice_pooled | segmenter dice_pooled |",
                      "|---|---|---|---|---|"]
            for key in ("weak_none", "weak_max", "weak_avg"):
                if key in r and r[key].get("train_pseudo"):
                    p, s = r[key]["train_pseudo"], r[key]["train_segmenter_same_images"]
                    lines.append(f"| {key[5:]} | {p['dice_mean']:.3f} | {s['dice_mean']:.3f} | "
                                 f"{p['dice_pooled']:.3f} | {s['dice_pooled']:.3f} |")
            lines.append("")
        if any(k.startswith("gt_") and k != "gt_light" for k in r):
            lines += ["## Table 5 analog: ablation with full supervision (test volumes)", "",
                      "| variant | params | " + " | ".join(KEYS) + " | train s |", "|" + "---|" * (len(KEYS) + 3)]
            for key, name in (("gt_baseline", "baseline (conv blocks, plain skips, no bottleneck module)"),
                              ("gt_fe", "+FE"), ("gt_fe_rc", "+FE +RC"), ("gt_fe_rc_mdppm", "+FE +RC +MDPPM"),
                              ("gt_fe_rc_aspp", "+FE +RC, ASPP instead of MDPPM")):
                if key in r:
                    t = r[key]["test"]
                    lines.append(f"| {name} | {r[key].get('parameters', '')} | "
                                 + " | ".join(f"{t[k]:.3f}" for k in KEYS) + f" | {r[key]['seconds']} |")
            lines.append("")
        if any(k.startswith("k_") for k in r) or "self_training" in r:
            lines += ["## Weak labels + pixel masks of k training slices, and self-training (test volumes)", "",
                      head, sep]
            ks = sorted((int(k[2:]), k) for k in r if k.startswith("k_"))
            for k, key in ks:
                lines.append(row(f"k = {k}" + (" (pseudo masks only)" if k == 0 else ""), r[key]))
            if "self_training" in r:
                lines.append(row("avg + one self-training round", r["self_training"]))
            lines.append("")
        return "\n".join(lines)


BEGIN, END = "<!-- train_eval:begin -->", "<!-- train_eval:end -->"


def write_report(path: Path, text: str) -> None:
    """Replace the generated block of the report (between the markers), keeping hand-written sections."""
    block = f"{BEGIN}\n{text}\n{END}"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = block + "\n" + old
    path.write_text(new if new.endswith("\n") else new + "\n", encoding="utf-8")


def _log_epochs(event) -> None:
    from covidseg_core.events import EpochReport, Message, Progress
    if isinstance(event, Progress) and event.stage == "segmenter" and event.done % 20 == 0:
        log.info("segmenter %s batch %d/%d", event.message, event.done, event.total)
    elif isinstance(event, EpochReport):
        log.info("%s epoch %d/%d %s %s (%.1f s)", event.stage, event.epoch, event.epochs,
                 {k: round(v, 4) for k, v in event.losses.items()},
                 {k: round(v, 4) for k, v in event.metrics.items() if isinstance(v, float)}, event.seconds)
    elif isinstance(event, Message):
        log.info("%s", event.text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "zenodo-dev")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_stage2")
    p.add_argument("--experiments", default="fusion,ablation,kslices")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--cls-epochs", type=int, default=6)
    p.add_argument("--seg-epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--base", type=int, default=None, help="network width (default: the model's own)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on segmenter batches per epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "results_stage2.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.data.is_dir():
        log.error("data folder %s is missing", args.data)
        return 2
    command = "python benchmarks/train_eval.py " + " ".join(sys.argv[1:] if argv is None else argv)
    bench = Bench(args)
    for name in args.experiments.split(","):
        getattr(bench, name.strip())()
        write_report(args.report, bench.report(command))
        log.info("wrote %s", args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
