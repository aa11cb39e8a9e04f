"""Where the whole `covidseg predict` job spends its time, and what overlapping reading and writing with the
network saves (issue 14, item 2), for three inputs: a NIfTI volume (the synthetic 300x512x512 of
predict_speed.py), a folder of PNG slices (zenodo-dev's images) and a DICOM series (ct-samples' totalseg_ct).

"before" is another source tree (e.g. `git archive HEAD covidseg_core | tar -x -C /tmp/before`), "after" this
one; each job runs in its own process, the two trees alternating, and the masks each tree writes are compared
byte for byte. `--profile` adds one cProfile'd job per input in each tree and prints the split of its time.

  MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \
  nice -n 19 .venv/bin/python benchmarks/predict_overlap.py --before /tmp/before --profile

The run of each input is untrained (weights do not change the speed), exported for ONNX Runtime at that
input's slice size as training does; `--run RUN` measures an existing run instead (only read).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
INPUTS = {"nifti": None,
          "images": SHARED / "zenodo-dev" / "images",
          "dicom": SHARED / "ct-samples" / "totalseg_ct" / "dicom_series"}
# cProfile'd functions -> the split's column (cumulative time; the rest is what none of them covers)
SPLIT = {"read": ("read_gray", "open_study", "_read_images"), "lung fields": ("compute_lung_fields",),
         "network": ("predict_probabilities",), "masks": ("finish_masks",),
         "write": ("atomic_write", "write_mask_nifti", "_has_fg", "_write_masks"), "model load": ("load_run_model",)}

log = logging.getLogger("predict_overlap")


# --- the child: one job of one tree ---------------------------------------------------------------------------

def child(args) -> int:
    sys.path.insert(0, str(Path(args.tree).resolve()))
    from covidseg_core.events import drive
    from covidseg_core.infer.predict import predict_job
    import covidseg_core
    assert Path(covidseg_core.__file__).resolve().is_relative_to(Path(args.tree).resolve()), covidseg_core.__file__

    job = lambda: drive(predict_job(args.run, args.input, args.pred, overwrite=True))  # noqa: E731
    record = {"tree": args.tree, "kind": args.kind}
    if args.profile:
        record["split"] = profiled(job)
    else:
        t0 = time.monotonic()
        summary = job()
        record["seconds"] = time.monotonic() - t0
        record["engine"] = summary.get("engine")
        record["digest"] = digest(Path(args.pred))
    Path(args.result).write_text(json.dumps(record))
    return 0


def profiled(job) -> dict:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t0 = time.monotonic()
    prof.runcall(job)
    total = time.monotonic() - t0
    stats = pstats.Stats(prof).stats
    split = {"total": total}
    for column, names in SPLIT.items():
        # a function that calls another one of its column is counted once (the outer one)
        times = [cum for (_, _, name), (_, _, _, cum, _) in stats.items() if name in names]
        split[column] = sum(times) if column == "read" else max(times, default=0.0)
    split["other"] = total - sum(v for k, v in split.items() if k != "total")
    return split


def digest(folder: Path) -> str:
    """sha256 over the names and bytes of the files a job wrote (temp files would show up here too)."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


# --- the parent: inputs, runs, alternation, the table ----------------------------------------------------------

def prepare(out: Path, kinds: list[str], run: Path | None) -> dict[str, tuple[Path, Path]]:
    """{kind: (input, run)}."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from benchmarks.predict_speed import make_run, make_volume
    from covidseg_core.budget import CPU_BASE, CPU_SIZE
    from covidseg_core.io.loader import open_study
    from covidseg_core.train_config import TrainConfig

    out.mkdir(parents=True, exist_ok=True)
    inputs = dict(INPUTS, nifti=out / "synthetic_300x512.nii.gz")
    if "nifti" in kinds:
        make_volume(inputs["nifti"], 300, 512)
    prepared = {}
    for kind in kinds:
        kind_run = run
        if run is None:     # a run per input, exported at that input's working size
            kind_run = out / f"run_{CPU_SIZE}_{kind}"
            if not (kind_run / "segmenter.onnx").is_file():
                sample = open_study(inputs[kind]).unit_range()[:2].astype(np.float32)
                make_run(kind_run, TrainConfig(size=CPU_SIZE, base=CPU_BASE), sample)
        prepared[kind] = (inputs[kind], kind_run)
    return prepared


def job_once(tree: Path, kind: str, inp: Path, run: Path, pred: Path, profile: bool) -> dict:
    result = pred.with_suffix(".json")
    cmd = [sys.executable, __file__, "--child", "--tree", str(tree), "--kind", kind, "--input", str(inp),
           "--run", str(run), "--pred", str(pred), "--result", str(result)] + (["--profile"] if profile else [])
    subprocess.run(cmd, check=True)
    return json.loads(result.read_text())


def measure(trees: dict[str, Path], prepared: dict, out: Path, repeats: int, profile: bool) -> dict:
    results: dict = {}
    for kind, (inp, run) in prepared.items():
        for rep in range(repeats):
            order = list(trees.items()) if rep % 2 == 0 else list(trees.items())[::-1]
            for name, tree in order:
                rec = job_once(tree, kind, inp, run, out / f"pred_{name}_{kind}", False)
                log.info("%s %s: %.2f s (%s)", kind, name, rec["seconds"], rec["engine"])
                results.setdefault((kind, name), []).append(rec)
        if profile:     # the split of the first tree's job (threads other than the main one are not profiled)
            name, tree = next(iter(trees.items()))
            rec = job_once(tree, kind, inp, run, out / f"prof_{name}_{kind}", True)
            results[(kind, name, "split")] = rec["split"]
            log.info("%s %s split: %s", kind, name, {k: round(v, 2) for k, v in rec["split"].items()})
    return results


def table(results: dict, trees: dict, prepared: dict) -> str:
    lines = ["| input | " + " | ".join(f"{n} (s, median)" for n in trees) + " | after / before | masks identical |",
             "|---|" + "---|" * (len(trees) + 2)]
    for kind in prepared:
        med = {n: sorted(r["seconds"] for r in results[(kind, n)])[len(results[(kind, n)]) // 2] for n in trees}
        digests = {r["digest"] for n in trees for r in results[(kind, n)]}
        ratio = med["after"] / med["before"] if "before" in med else float("nan")
        lines.append(f"| {kind} | " + " | ".join(f"{med[n]:.2f}" for n in trees)
                     + f" | {ratio:.2f} | {'yes' if len(digests) == 1 else 'NO'} |")
    return "\n".join(lines)


def split_table(results: dict, trees: dict, prepared: dict) -> str:
    cols = ["total"] + list(SPLIT) + ["other"]
    lines = ["| input | tree | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for kind in prepared:
        for name in trees:
            split = results.get((kind, name, "split"))
            if split:
                lines.append(f"| {kind} | {name} | " + " | ".join(f"{split[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "out" / "predict_overlap")
    p.add_argument("--before", type=Path, default=None, help="source tree of the 'before' code")
    p.add_argument("--kinds", default="nifti,images,dicom")
    p.add_argument("--repeats", type=int, default=3, help="jobs per tree and input (alternating)")
    p.add_argument("--profile", action="store_true", help="also one cProfile'd job per tree and input")
    p.add_argument("--run", type=Path, default=None, help="an existing run to measure (only read)")
    for name in ("--tree", "--kind", "--input", "--pred", "--result"):     # the child's
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.child:
        return child(args)
    trees = ({"before": args.before} if args.before else {}) | {"after": ROOT}
    prepared = prepare(args.out, args.kinds.split(","), args.run)
    load = os.getloadavg()
    results = measure(trees, prepared, args.out, args.repeats, args.profile)
    log.info("load average before %s, after %s\n%s\n\n%s", tuple(round(x, 2) for x in load),
             tuple(round(x, 2) for x in os.getloadavg()), table(results, trees, prepared),
             split_table(results, trees, prepared) if args.profile else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
