"""Where a float NIfTI file holds NaN or infinite voxels. ITK's NIfTI reader turns NaN into 0 without a word,
so a broken reconstruction would read as plain water; the voxel block is read here directly to find them."""
from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_FLOAT_TYPES = {16: "f4", 64: "f8"}     # NIfTI datatype codes of float32 / float64


def _header(head: bytes) -> tuple[str, int, list[int], int] | None:
    """(byte order, datatype, dims, voxel offset) of a NIfTI-1 or NIfTI-2 header, None when it is neither."""
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0]
        if size == 348:
            dims = list(struct.unpack(order + "8h", head[40:56]))
            datatype = struct.unpack(order + "h", head[70:72])[0]
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            return order, datatype, dims, offset
        if size == 540:
            datatype = struct.unpack(order + "h", head[12:14])[0]
            dims = list(struct.unpack(order + "8q", head[16:80]))
            offset = struct.unpack(order + "q", head[168:176])[0]
            return order, datatype, dims, offset
    return None


def non_finite_mask(path: Path) -> np.ndarray | None:
    """Boolean (z, y, x) of the non-finite voxels of a 3D float NIfTI file; None for other files (integer
    voxels cannot be NaN) or when the file cannot be parsed here (ITK reads it anyway)."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(540)
            parsed = _header(head)
            if parsed is None or parsed[1] not in _FLOAT_TYPES:
                return None
            order, datatype, dims, offset = parsed
            shape = [max(int(d), 1) for d in dims[1:4]]
            fh.seek(offset)
            dtype = np.dtype(order + _FLOAT_TYPES[datatype])
            data = fh.read(int(np.prod(shape)) * dtype.itemsize)
    except (OSError, EOFError, struct.error, ValueError) as exc:
        log.debug("could not scan %s for NaN voxels: %s", path, exc)
        return None
    values = np.frombuffer(data, dtype=dtype)
    if values.size != int(np.prod(shape)):
        return None
    return ~np.isfinite(values.reshape(shape[::-1]))
