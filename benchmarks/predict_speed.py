"""How fast `covidseg predict` segments a 300-slice 512x512 volume on this machine, and what helps.

Writes a synthetic 300x512x512 HU volume (the demo generator), makes a run folder holding an untrained network
of the chosen configuration (weights do not change the speed), then times:
  - the whole `predict` job (read NIfTI -> window -> network -> write NIfTI), and
  - the network loop alone under variants: engine (torch eager fp32 / auto precision vs ONNX Runtime, the run's
    RUN/segmenter.onnx), precision, threads, channels_last, batch size, torch.compile,
and prints them as a table with each row's ratio to torch eager fp32 (ratios from one run are what compare on a
shared machine).

  OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/predict_speed.py --out out/predict_speed [--size 256]

`--size` is the run's working size: 128 (the default; width 16) is what a budgeted CPU run trains at, 256 (the
model's default width) the fixed schedule's and CUDA's.
"""
from __future__ import annotations

import argparse
import dataclasses
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

from covidseg_core.events import drive  # noqa: E402
from covidseg_core.infer.model import load_run_model  # noqa: E402
from covidseg_core.infer.predict import predict_job, predict_probabilities  # noqa: E402
from covidseg_core.models.segmenter import build_from_spec  # noqa: E402
from covidseg_core.runs import BEST, RunFolder  # noqa: E402
from covidseg_core.budget import CPU_BASE, CPU_SIZE  # noqa: E402
from covidseg_core.train_config import TrainConfig, fast_config  # noqa: E402

log = logging.getLogger("predict_speed")


def make_volume(path: Path, n: int, size: int) -> None:
    import SimpleITK as sitk

    from covidseg_core.demo import make_demo_volume
    if path.is_file():
        return
    hu, _, _ = make_demo_volume(seed=0, n_slices=n, size=size)
    img = sitk.GetImageFromArray(hu.astype(np.int16))
    img.SetSpacing((0.7, 0.7, 1.0))
    sitk.WriteImage(img, str(path), True)


def make_run(path: Path, cfg: TrainConfig, sample01: np.ndarray) -> None:
    """A run with an untrained network, exported for ONNX Runtime as training does (onnx_engine.export_onnx)."""
    from covidseg_core.infer.onnx_export import export_onnx

    run = RunFolder(path)
    if not run.checkpoint_path(BEST).is_file():
        if not run.exists():
            run.create(cfg.options(), {"path": "synthetic"}, "cpu")
        model = build_from_spec(cfg.model_spec())
        run.save_checkpoint({"model": model.state_dict(), "epoch": 0, "spec": cfg.model_spec()}, BEST)
    if (run.read_json(run.onnx_info_path.name) or {}).get("status") != "ok":
        info = export_onnx(run.path, sample01)
        log.info("ONNX export: %s", {k: info.get(k) for k in ("status", "reason", "parity", "seconds")})


def time_loop(lm, images, batch_size) -> float:
    t0 = time.monotonic()
    drive(predict_probabilities(lm, images, batch_size))
    return time.monotonic() - t0


def table(results: dict) -> str:
    """The network-loop rows as a markdown table, each with its speed-up over torch eager fp32."""
    rows = results["network_loop_seconds_for_volume"]
    ref = rows.get("torch eager fp32")
    lines = [f"whole predict job ({results['predict_job_engine']}, {results['predict_job_precision']}): "
             f"{results['predict_job_seconds']} s for {'x'.join(map(str, results['volume']))}, size "
             f"{results['size']}, {results['predict_job_threads']} threads, load {results['load_avg'][0]:.1f} -> "
             f"{results['load_avg_after'][0]:.1f}", "",
             "| network loop, whole volume | seconds | speed-up vs torch eager fp32 |", "|---|---:|---:|"]
    for name, v in rows.items():
        if isinstance(v, float):
            ratio = f"{ref / v:.2f}x" if isinstance(ref, float) and v > 0 else "-"
            lines.append(f"| {name} | {v:.1f} | {ratio} |")
        else:
            lines.append(f"| {name} | {v} | - |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=ROOT / "out" / "predict_speed")
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--image", type=int, default=512)
    p.add_argument("--preset", choices=("default", "fast"), default="default")
    p.add_argument("--size", type=int, default=CPU_SIZE, help="working size of the default preset's run")
    p.add_argument("--variants", default="engine,unet,precision,threads,channels_last,batch,compile")
    p.add_argument("--precision", default="auto", help="precision of the whole-job timing")
    p.add_argument("--loop-slices", type=int, default=60, help="slices per variant timing (scaled to the volume)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    vol = args.out / f"synthetic_{args.slices}x{args.image}.nii.gz"
    make_volume(vol, args.slices, args.image)
    # the network a run of that size gets: a budgeted CPU run's width at the CPU size, else the model's default
    base = CPU_BASE if args.size == CPU_SIZE else None
    cfg = TrainConfig(size=args.size, base=base) if args.preset == "default" else fast_config()
    run = args.out / f"run_{args.preset}_{cfg.size}"     # a run folder per size: an older one is never reused
    rng = np.random.default_rng(0)
    images = rng.random((args.loop_slices, args.image, args.image), dtype=np.float32)
    make_run(run, cfg, images[:2])
    results = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "preset": args.preset,
               "size": cfg.size, "volume": [args.slices, args.image, args.image], "load_avg": os.getloadavg()}

    t0 = time.monotonic()
    # args.out/pred is this benchmark's own scratch folder: a second run replaces its mask
    summary = drive(predict_job(run, vol, args.out / "pred", precision=args.precision, overwrite=True))
    results["predict_job_seconds"] = round(time.monotonic() - t0, 2)
    results["predict_job_threads"] = torch.get_num_threads()
    results["predict_job_precision"] = summary.get("precision", args.precision)
    results["predict_job_engine"] = summary.get("engine")
    log.info("whole predict job: %.1f s (%s)", results["predict_job_seconds"], summary)

    scale = args.slices / args.loop_slices
    variants = {}
    lm = load_run_model(run, "cpu", "fp32", engine="torch")
    wanted = args.variants.split(",")
    if "engine" in wanted:
        # interleaved, twice, best of two: the machine's load changes during a run
        engines = {"torch eager fp32": lambda: lm,
                   "torch eager, auto precision": lambda: load_run_model(run, "cpu", "auto", engine="torch"),
                   "onnxruntime fp32": lambda: load_run_model(run, "cpu", "fp32")}
        loaded = {name: make() for name, make in engines.items()}
        if loaded["onnxruntime fp32"].onnx is None:
            variants["onnxruntime fp32"] = f"not used: {loaded['onnxruntime fp32'].note or 'no export'}"
            loaded.pop("onnxruntime fp32")
        for _ in range(2):
            for name, model in loaded.items():
                t = time_loop(model, images, None) * scale
                variants[name] = min(t, variants.get(name, float("inf")))
    if "unet" in wanted:
        # the same loop through the standard U-Net (its default width) at the same working size and engines
        unet_run = args.out / f"run_unet_{cfg.size}"
        make_run(unet_run, dataclasses.replace(cfg, model="unet", base=None), images[:2])
        for name, engine in (("standard U-Net, torch eager fp32", "torch"), ("standard U-Net, onnxruntime fp32", "auto")):
            variants[name] = time_loop(load_run_model(unet_run, "cpu", "fp32", engine=engine), images, None) * scale
    if "precision" in wanted:
        for prec in ("fp32", "bf16"):
            model = load_run_model(run, "cpu", prec, engine="torch")
            variants[f"precision={prec}"] = time_loop(model, images, None) * scale
    if "threads" in wanted:
        for n in (1, 2):
            torch.set_num_threads(n)
            variants[f"threads={n}"] = time_loop(lm, images, None) * scale
        torch.set_num_threads(os.cpu_count() or 1)
    if "channels_last" in wanted:
        plain = load_run_model(run, "cpu", "fp32", engine="torch")
        plain.model = plain.model.to(memory_format=torch.contiguous_format)
        variants["contiguous (no channels_last)"] = time_loop(plain, images, None) * scale
    if "batch" in wanted:
        for bs in (1, 4, 16):
            variants[f"batch={bs}"] = time_loop(lm, images, bs) * scale
    if "compile" in wanted:
        try:
            compiled = load_run_model(run, "cpu", "fp32", engine="torch")
            compiled.model = torch.compile(compiled.model)
            time_loop(compiled, images[:4], None)              # compile outside the timing
            variants["torch.compile"] = time_loop(compiled, images, None) * scale
        except Exception as exc:   # noqa: BLE001 - a compiler that is missing here is a result, not a crash
            variants["torch.compile"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    results["network_loop_seconds_for_volume"] = {k: (round(v, 1) if isinstance(v, float) else v)
                                                  for k, v in variants.items()}
    results["load_avg_after"] = os.getloadavg()
    log.info("%s", json.dumps(results, indent=2))
    print(table(results))
    (args.out / f"results_{args.preset}_{args.precision}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
