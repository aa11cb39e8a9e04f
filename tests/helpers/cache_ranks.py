"""`torchrun ... tests/helpers/cache_ranks.py DATA CACHE OUT`: every rank reads DATA through the slice cache in
CACHE and writes OUT/rank<N>.json: its rank, how many times it decoded the study, and what it got (a file per rank:
two ranks printing to one pipe can interleave their lines on a busy machine). Used only by
tests/test_slice_cache.py, to see that rank 0 alone decodes."""
import json
import sys
from pathlib import Path

import numpy as np

from covidseg_core import distributed, slice_cache

decoded = []
real_load = slice_cache.load_slice_set


def counting_load(*args, **kwargs):
    decoded.append(args)
    return real_load(*args, **kwargs)


slice_cache.load_slice_set = counting_load

if __name__ == "__main__":
    with distributed.session("cpu"):
        slices = slice_cache.load_slice_set_cached(sys.argv[1], cache_dir=sys.argv[2])
        record = {"rank": distributed.rank(), "decoded": len(decoded), "ids": slices.ids,
                  "sum": float(slices.images.sum(dtype=np.float64)), "mapped": not slices.images.flags.writeable}
        (Path(sys.argv[3]) / f"rank{distributed.rank()}.json").write_text(json.dumps(record))
