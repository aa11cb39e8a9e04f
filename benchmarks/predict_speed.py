"""How fast `covidseg predict` segments a 300-slice 512x512 volume on this machine, and what helps.

Writes a synthetic 300x512x512 HU volume (the demo generator), makes a run folder holding an untrained network
of the chosen configuration (weights do not change the speed), then times:
  - the whole `predict` job (read NIfTI -> window -> network -> write NIfTI), and
  - the network loop alone under variants: engine (torch eager fp32 / auto precision vs ONNX Runtime, the run's
    RUN/segmenter.onnx), precision, threads, channels_last, batch size, torch.compile, and OpenVINO (the same
    RUN/segmenter.onnx compiled for OpenVINO's CPU device, in f32 and in its own default precision),
and prints them as a table with each row's ratio to torch eager fp32 (ratios from one run are what compare on a
shared machine) and, for the other engines, the share of mask pixels (probability >= 0.5) that differ from torch
eager fp32's on the same slices.

OpenVINO is not a dependency of the product; the benchmark measures it when it is importable, else its rows say
"not run". To measure it: `.venv/bin/pip install openvino==2026.4.1`.

  OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/predict_speed.py --out out/predict_speed [--size 256] \
      [--variants engine,compile,openvino,mirror]

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
from covidseg_core.imaging.resize import working_shape  # noqa: E402
from covidseg_core.infer.model import load_run_model  # noqa: E402
from covidseg_core.infer.onnx_engine import mask_agreement  # noqa: E402
from covidseg_core.infer.predict import predict_job, predict_probabilities  # noqa: E402
from covidseg_core.models.segmenter import build_from_spec  # noqa: E402
from covidseg_core.runs import BEST, RunFolder  # noqa: E402
from covidseg_core.budget import CPU_BASE, CPU_SIZE  # noqa: E402
from covidseg_core.train_config import TrainConfig, fast_config  # noqa: E402

log = logging.getLogger("predict_speed")

OPENVINO_PIN = "openvino==2026.4.1"


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
    return run_loop(lm, images, batch_size)[0]


def run_loop(lm, images, batch_size, flip_average: bool = False) -> tuple[float, np.ndarray]:
    """Seconds of the network loop (batching, resize to the working size and back, sigmoid) and its
    probabilities."""
    t0 = time.monotonic()
    prob = drive(predict_probabilities(lm, images, batch_size, flip_average=flip_average))
    return time.monotonic() - t0, prob


def mask_flips(prob: np.ndarray, ref: np.ndarray) -> dict:
    """onnx_engine.mask_agreement of the two, and the reference's mask share (a mask that is nearly all 0 or all 1
    says little)."""
    return {**mask_agreement(ref, prob), "reference_mask_share": float((ref >= 0.5).mean())}


def log_flips(name: str, flips: dict) -> None:
    if flips["reference_mask_share"] in (0.0, 1.0):
        log.warning("%s: torch's mask is all %d on these slices: 0 differing pixels says little (--run a trained "
                    "run)", name, int(flips["reference_mask_share"]))
    log.info("%s vs torch eager fp32: masks differ in %.4f%% of the pixels, largest probability difference %.2g "
             "(torch's mask covers %.1f%%)", name, 100 * flips["mask_pixels_differing"],
             flips["max_probability_difference"], 100 * flips["reference_mask_share"])


class OpenVinoSegmenter:
    """The run's ONNX export compiled for OpenVINO's CPU device; callable like onnx_engine.OnnxSegmenter, so that
    predict_probabilities runs it in place of ONNX Runtime (same batching, same resizes)."""

    def __init__(self, path: Path, input_hw, threads: int, precision: str | None):
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        config = {props.inference_num_threads: max(1, int(threads)),
                  hints.performance_mode: hints.PerformanceMode.LATENCY}
        if precision is not None:
            # on CPUs with bf16 units (AMX, AVX512_BF16) the CPU plugin computes in bf16 unless told f32
            config[hints.inference_precision] = precision
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision = str(self.compiled.get_property(hints.inference_precision))
        self.input_hw = tuple(int(v) for v in input_hw)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        self.request.infer([arr])
        # the request reuses its output buffer on the next call: copy
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


def table(results: dict) -> str:
    """The network-loop rows as a markdown table, each with its speed-up over torch eager fp32."""
    rows = results["network_loop_seconds_for_volume"]
    ref = rows.get("torch eager fp32")
    lines = [f"whole predict job ({results['predict_job_engine']}, {results['predict_job_precision']}): "
             f"{results['predict_job_seconds']} s for {'x'.join(map(str, results['volume']))}, size "
             f"{results['size']}, {results['predict_job_threads']} threads, load {results['load_avg'][0]:.1f} -> "
             f"{results['load_avg_after'][0]:.1f}", "",
             "| network loop, whole volume | seconds | speed-up vs torch eager fp32 | mask pixels differing from "
             "torch eager fp32 (max probability difference) |", "|---|---:|---:|---:|"]
    flips = results.get("mask_parity_vs_torch_eager_fp32", {})
    for name, v in rows.items():
        f = flips.get(name)
        flip = f"{f['mask_pixels_differing']:.4%} (max dp {f['max_probability_difference']:.1g})" if f else "-"
        if isinstance(v, float):
            ratio = f"{ref / v:.2f}x" if isinstance(ref, float) and v > 0 else "-"
            lines.append(f"| {name} | {v:.1f} | {ratio} | {flip} |")
        else:
            lines.append(f"| {name} | {v} | - | {flip} |")
    return "\n".join(lines)


def failure(exc: Exception) -> str:
    first = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"failed: {type(exc).__name__}: {first}"


def bench_compile(run: Path, images, scale: float, reference, variants: dict, flips: dict) -> None:
    """torch.compile (inductor) of the fp32 network, timed after a warm-up call that compiles it."""
    name = "torch.compile fp32"
    try:
        compiled = load_run_model(run, "cpu", "fp32", engine="torch")
        compiled.model = torch.compile(compiled.model)
        # compile outside the timing, on the loop itself: each batch shape it meets (a smaller last batch) compiles
        warm = run_loop(compiled, images, None)[0]
        log.info("torch.compile: first loop (compiling) %.1f s", warm)
        t, prob = run_loop(compiled, images, None)
    except Exception as exc:   # noqa: BLE001 - a compiler that is missing here is a result, not a crash
        variants[name] = failure(exc)
        return
    variants[name] = t * scale
    flips[name] = mask_flips(prob, reference())
    log_flips(name, flips[name])


def bench_openvino(run: Path, images, scale: float, reference, variants: dict, flips: dict) -> None:
    """The run's ONNX export through OpenVINO's CPU device, forced to f32 and at the plugin's own default
    precision (bf16 on CPUs with bf16 units), inside the same predict_probabilities loop as the other rows."""
    names = ("openvino fp32", "openvino, its default CPU precision")
    try:
        import openvino  # noqa: F401
    except ImportError:
        for name in names:
            variants[name] = f"not run: pip install {OPENVINO_PIN}"
        return
    folder = RunFolder(run)
    info = folder.read_json(folder.onnx_info_path.name) or {}
    if info.get("status") != "ok" or not folder.onnx_path.is_file():
        for name in names:
            variants[name] = f"not run: no usable ONNX export ({info.get('reason') or 'no record'})"
        return
    base = load_run_model(run, "cpu", "fp32", engine="torch")
    for name, precision in zip(names, ("f32", None)):
        try:
            t0 = time.monotonic()
            seg = OpenVinoSegmenter(folder.onnx_path, info["input_hw"], torch.get_num_threads(), precision)
            log.info("%s: compiled in %.1f s, inference precision %s", name, time.monotonic() - t0, seg.precision)
            if seg.input_hw != tuple(working_shape(*images.shape[1:], base.size)):
                # predict_probabilities would quietly run PyTorch instead
                raise ValueError(f"export made at {seg.input_hw}, slices worked at another size")
            lm = dataclasses.replace(base, onnx=seg)
            run_loop(lm, images[:4], None)                  # first inferences (shape-specific setup) untimed
            t, prob = run_loop(lm, images, None)
        except Exception as exc:   # noqa: BLE001 - a graph OpenVINO cannot run is a result, not a crash
            variants[name] = failure(exc)
            continue
        variants[name] = t * scale
        flips[name] = mask_flips(prob, reference())
        log_flips(name, flips[name])


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
    p.add_argument("--run", type=Path, default=None,
                   help="an existing (trained) run to measure, only read, instead of a fresh untrained one: an "
                        "untrained network's mask is all 0 or all 1, which makes the parity columns say little")
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
    if args.run is not None:
        run = args.run
    else:
        make_run(run, cfg, images[:2])
    results = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "preset": args.preset,
               "size": cfg.size, "run": str(run), "volume": [args.slices, args.image, args.image],
               "load_avg": os.getloadavg()}

    t0 = time.monotonic()
    # args.out/pred is this benchmark's own scratch folder: a second run replaces its mask
    summary = drive(predict_job(run, vol, args.out / "pred", precision=args.precision, overwrite=True))
    results["predict_job_seconds"] = round(time.monotonic() - t0, 2)
    results["predict_job_threads"] = torch.get_num_threads()
    results["predict_job_precision"] = summary.get("precision", args.precision)
    results["predict_job_engine"] = summary.get("engine")
    log.info("whole predict job: %.1f s (%s)", results["predict_job_seconds"], summary)

    scale = args.slices / args.loop_slices
    variants, flips = {}, {}
    lm = load_run_model(run, "cpu", "fp32", engine="torch")
    wanted = args.variants.split(",")
    ref = None

    def reference() -> np.ndarray:
        """torch eager fp32's probabilities on the loop's slices, what the other engines' masks are compared with."""
        nonlocal ref
        if ref is None:
            ref = run_loop(lm, images, None)[1]
        return ref

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
                t, prob = run_loop(model, images, None)
                variants[name] = min(t * scale, variants.get(name, float("inf")))
                if name == "torch eager fp32":
                    ref = prob
                elif name == "onnxruntime fp32":
                    flips[name] = mask_flips(prob, reference())
                    log_flips(name, flips[name])
    if "unet" in wanted:
        # the same loop through the standard U-Net (its default width) at the same working size and engines
        unet_run = args.out / f"run_unet_{cfg.size}"
        make_run(unet_run, dataclasses.replace(cfg, model="unet", base=None), images[:2])
        for name, engine in (("standard U-Net, torch eager fp32", "torch"), ("standard U-Net, onnxruntime fp32", "auto")):
            variants[name] = time_loop(load_run_model(unet_run, "cpu", "fp32", engine=engine), images, None) * scale
    if "mirror" in wanted:
        # the masks' mirror averaging (predict.MIRROR_AVERAGE) against one pass, the CPU's engine, interleaved
        mirror_lm = load_run_model(run, "cpu", "fp32")
        for _ in range(2):
            for flip in (False, True):
                name = f"{mirror_lm.engine} fp32, mirror averaging {'on' if flip else 'off'}"
                variants[name] = min(run_loop(mirror_lm, images, None, flip)[0] * scale, variants.get(name, 1e9))
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
        bench_compile(run, images, scale, reference, variants, flips)
    if "openvino" in wanted:
        bench_openvino(run, images, scale, reference, variants, flips)
    results["network_loop_seconds_for_volume"] = {k: (round(v, 1) if isinstance(v, float) else v)
                                                  for k, v in variants.items()}
    results["mask_parity_vs_torch_eager_fp32"] = flips
    results["load_avg_after"] = os.getloadavg()
    log.info("%s", json.dumps(results, indent=2))
    print(table(results))
    (args.out / f"results_{args.preset}_{args.precision}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
