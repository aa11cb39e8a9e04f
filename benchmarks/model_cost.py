"""Parameters, multiply-adds and inference time of the segmenters, all measured in one run so ratios compare.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
        .venv/bin/python benchmarks/model_cost.py [--out docs/model_cost.md]

Multiply-adds (MACs) are counted by torch.utils.flop_counter (convolutions and linear layers; MACs = FLOPs/2)
on one 1x1x512x512 slice. Times are the median over timed runs after warm-up, under torch.inference_mode, in
eval mode, reported per slice (a batch of 8 divided by 8). Variants of the CPU forward (BatchNorm folded,
channels_last, bf16 autocast, torch.compile) are timed for the models in --variants-for, in turns with the
eager forward so that their ratios hold on a loaded machine; the models themselves are timed one after the
other. On CUDA the forward runs under fp16 autocast.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from covidseg_core.models.segmenter import SEGMENTER_NAMES, build_segmenter  # noqa: E402

log = logging.getLogger("model_cost")


def count_macs(model: torch.nn.Module, size: int) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, model.in_ch, size, size))
    return counter.get_total_flops() // 2


def round_robin_ms(fns: dict, x: torch.Tensor, *, warmup: int, runs: int, budget_s: float,
                   cuda: bool) -> dict[str, float | str]:
    """Median wall time in ms of each fn(x). All are warmed up first, then timed in turns (one call of each per
    round) so that a load change on a shared machine hits every variant alike. At most `runs` rounds; after two
    rounds, stop once `budget_s` seconds per function have been spent. A function that raises gets its error
    name instead of a time."""
    results: dict[str, float | str] = {}
    live = {}
    with torch.inference_mode():
        for name, fn in fns.items():
            try:
                for _ in range(warmup):
                    fn(x)
                live[name] = fn
            except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, not fatal
                log.warning("%s failed: %s", name, exc)
                results[name] = f"failed: {type(exc).__name__}"
        times: dict[str, list[float]] = {name: [] for name in live}
        spent = 0.0
        rounds = 0
        while live and rounds < runs and (rounds < 2 or spent < budget_s * len(live)):
            for name, fn in live.items():
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn(x)
                if cuda:
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
                spent += times[name][-1]
            rounds += 1
    results.update({name: 1000.0 * statistics.median(t) for name, t in times.items()})
    return results


VARIANT_PARTS = {"folded", "channels_last", "bf16", "compile"}


def variant_parts(variant: str) -> set[str]:
    parts = set(variant.split("+"))
    unknown = parts - VARIANT_PARTS
    if unknown:
        raise ValueError(f"unknown variant part(s) {sorted(unknown)} in {variant!r}; use {sorted(VARIANT_PARTS)}")
    return parts


def cpu_runner(model, variant: str):
    """A forward function for one CPU variant, '+'-joined from: folded (BatchNorm folded into the convs, as
    SegmenterBase.inference_copy does), channels_last, bf16 (CPU autocast to bfloat16), compile
    (torch.compile, inductor; minutes of compiling on a small CPU)."""
    parts = variant_parts(variant)
    model = model.eval()
    if "folded" in parts:
        model = model.inference_copy(channels_last=False)
    if "channels_last" in parts:
        model = model.to(memory_format=torch.channels_last)
    fn = torch.compile(model, dynamic=False) if "compile" in parts else model
    layout = torch.channels_last if "channels_last" in parts else torch.contiguous_format
    use_bf16 = "bf16" in parts

    def forward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            return fn(x.contiguous(memory_format=layout))
    return forward


def time_per_slice(fns: dict, in_ch: int, size: int, batch: int, args, *, device: str = "cpu",
                   warmup: int = 1) -> dict[str, float | str]:
    x = torch.rand(batch, in_ch, size, size, device=device)
    ms = round_robin_ms(fns, x, warmup=warmup, runs=args.runs, budget_s=args.budget_s, cuda=device == "cuda")
    return {k: v / batch if isinstance(v, float) else v for k, v in ms.items()}


def fmt(ms: float | str | None) -> str:
    if isinstance(ms, str):
        return ms
    return "n/a" if ms is None else (f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}")


def measure(args) -> str:
    size, batches = args.size, (1, args.batch)
    cuda = torch.cuda.is_available() and not args.no_cuda
    rows, variant_rows = [], []
    unet_params = build_segmenter("unet").num_parameters()
    for name in args.models:
        torch.manual_seed(0)
        model = build_segmenter(name).eval()
        params, macs = model.num_parameters(), count_macs(model, size)
        variants = args.variants if name in args.variants_for else []
        log.info("%s: %d parameters, %.2f GMACs; timing CPU eager %s", name, params, macs / 1e9,
                 " ".join(variants))
        cpu = []
        for b in batches:
            # a fresh model per variant: channels_last converts a module in place
            fns = {"eager": model, **{v: cpu_runner(build_segmenter(name), v) for v in variants}}
            t0 = time.perf_counter()
            cpu.append(time_per_slice(fns, model.in_ch, size, b, args,
                                      warmup=2 if any("compile" in v for v in variants) else 1))
            log.info("  batch %d done in %.0f s (warm-up and any compile included)", b, time.perf_counter() - t0)
        gpu: list[float | str | None] = [None, None]
        if cuda:
            gmodel = build_segmenter(name).cuda().eval()

            def autocast_forward(x, m=gmodel):
                with torch.autocast("cuda", dtype=torch.float16):
                    return m(x)
            gpu = [time_per_slice({"cuda": autocast_forward}, model.in_ch, size, b, args, device="cuda",
                                  warmup=5)["cuda"] for b in batches]
            del gmodel
            torch.cuda.empty_cache()
        rows.append(f"| {name} | {params:,} | {unet_params / params:.1f}x | {macs / 1e9:.2f} | "
                    f"{fmt(cpu[0]['eager'])} | {fmt(cpu[1]['eager'])} | {fmt(gpu[0])} | {fmt(gpu[1])} |")
        for v in (["eager"] + variants) if variants else []:
            variant_rows.append(f"| {name} | {v} | {fmt(cpu[0][v])} | {fmt(cpu[1][v])} |")

    b = args.batch
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    header = [
        f"### Segmenter cost at {size}x{size} ({datetime.date.today().isoformat()})",
        "",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads, load average before the run {args.load_before}, after {load}"
        + (f", CUDA {torch.cuda.get_device_name(0)}" if cuda else ", no CUDA device") + ".",
        f"Times: median ms per slice after warm-up, torch.inference_mode; b{b} = a batch of {b} divided by {b}.",
        "",
        f"| model | parameters | U-Net/model params | GMACs | CPU b1 ms | CPU b{b} ms/slice | "
        f"CUDA fp16 b1 ms | CUDA fp16 b{b} ms/slice |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table = "\n".join(header + rows)
    if variant_rows:
        table += ("\n\nCPU variants (fp32 unless bf16 = CPU autocast to bfloat16; folded = BatchNorm folded into "
                  "the convs):\n\n")
        table += f"| model | variant | b1 ms | b{b} ms/slice |\n|---|---|---:|---:|\n" + "\n".join(variant_rows)
    return table + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(SEGMENTER_NAMES), choices=SEGMENTER_NAMES)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8, help="the larger batch size timed (besides 1)")
    p.add_argument("--runs", type=int, default=7, help="timed runs per measurement at most")
    p.add_argument("--budget-s", type=float, default=20.0,
                   help="stop timing a measurement after this many seconds (at least two runs)")
    p.add_argument("--variants-for", nargs="*", default=["light", "unet"],
                   help="models whose CPU channels_last / torch.compile variants are timed")
    p.add_argument("--variants", nargs="*",
                   default=["channels_last", "folded+channels_last", "folded+channels_last+bf16"],
                   help="'+'-joined parts among folded, channels_last, bf16, compile (compile takes minutes on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--out", type=Path, help="also append the table to this markdown file")
    args = p.parse_args(argv)
    for variant in args.variants:
        try:
            variant_parts(variant)
        except ValueError as exc:
            p.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    table = measure(args)
    sys.stdout.write(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as f:
            f.write("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
