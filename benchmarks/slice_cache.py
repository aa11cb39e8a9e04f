"""Reading a data set plainly (data.load_slice_set: every image decoded) against the slice cache
(covidseg_core/slice_cache.py): its first load (decode, then write the entry), a hit (open the memory maps), a hit
whose every page is then read (the images summed), and the entry's key alone (a stat of every file).

  nice -n 19 .venv/bin/python benchmarks/slice_cache.py --data ../shared/data/zenodo-dev --cache-dir /tmp/sc-bench

The cache folder is emptied first and removed at the end (--keep leaves it). The hits find the entry in the page
cache (it was just written): a first read after a reboot also pays the disk.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(f):
    started = time.perf_counter()
    result = f()
    return result, round(time.perf_counter() - started, 3)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a data set, as for covidseg train --data")
    p.add_argument("--labels", type=Path, default=None, help="its labels CSV when it does not lie with the data")
    p.add_argument("--cache-dir", type=Path, required=True, help="an empty or throw-away folder (emptied first)")
    p.add_argument("--hits", type=int, default=3, help="how many hits to time (default 3)")
    p.add_argument("--keep", action="store_true", help="leave the cache entry in --cache-dir")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from covidseg_core import slice_cache
    from covidseg_core.data import load_slice_set

    shutil.rmtree(args.cache_dir, ignore_errors=True)
    plain, plain_s = timed(lambda: load_slice_set(args.data, args.labels))
    _, key_s = timed(lambda: slice_cache.entry_key(slice_cache.source_inputs(args.data, args.labels)))
    load = lambda: slice_cache.load_slice_set_cached(args.data, args.labels, cache_dir=args.cache_dir)  # noqa: E731
    built, build_s = timed(load)
    hits = [timed(load)[1] for _ in range(args.hits)]
    _, read_s = timed(lambda: float(load().images.sum(dtype=np.float64)))
    entry = next(p for p in args.cache_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    result = {
        "data": str(args.data), "slices": len(plain), "shape": list(plain.images.shape[1:]),
        "plain_load_s": plain_s, "key_s": key_s, "first_cached_load_s": build_s,
        "hit_s": min(hits), "hits_s": hits, "hit_and_read_all_s": read_s,
        "entry_mb": round(sum(f.stat().st_size for f in entry.iterdir()) / 2**20, 1),
        "identical": bool(np.array_equal(plain.images, built.images) and plain.ids == built.ids
                          and plain.labels == built.labels and plain.groups == built.groups),
    }
    if not args.keep:
        shutil.rmtree(args.cache_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
