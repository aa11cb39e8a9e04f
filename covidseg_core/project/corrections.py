"""The user's correction masks as files: what a correction may be, how it is encoded (PNG 0/255), decoded,
and named inside the project (corrections/<source>/<name>.png)."""
from __future__ import annotations

import hashlib
import io
import re
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError, ProjectError
from ..io.images import IMAGE_SUFFIXES
from .ops import CORRECTIONS_DIR

# a slice id that is a file name loses its suffix in the correction's name (DICOM files included)
_STRIPPED_SUFFIXES = (*sorted(IMAGE_SUFFIXES), ".dcm")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


def binary_mask(mask: Any, expected_shape: tuple[int, int] | None) -> np.ndarray:
    """A 2-D bool or 0/1 or 0/255 integer mask -> uint8 0/255; a clear InputError for anything else."""
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"A correction mask must be one 2-D slice, got an array of shape {arr.shape}.")
    if expected_shape is not None and tuple(arr.shape) != tuple(int(v) for v in expected_shape):
        raise InputError(f"mask of the wrong size: {arr.shape[0]}x{arr.shape[1]} pixels, but the slice is "
                         f"{expected_shape[0]}x{expected_shape[1]}.", "Draw the correction on the slice itself.")
    if arr.dtype == bool:
        foreground = arr
    elif np.issubdtype(arr.dtype, np.integer):
        if not set(np.unique(arr).tolist()) <= {0, 1, 255}:
            raise InputError("A correction mask must hold only 0 and 1 (or 0 and 255).")
        foreground = arr > 0
    else:
        raise InputError(f"A correction mask must be boolean or uint8, got {arr.dtype}.")
    return np.where(foreground, 255, 0).astype(np.uint8)


def encode_mask(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_mask(data: bytes, slice_id: str) -> np.ndarray:
    """PNG bytes of a correction -> uint8 0/255."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            values = np.asarray(image.convert("L"))
    except (OSError, ValueError) as err:
        raise ProjectError(f"The correction of slice {slice_id} is damaged ({err}).",
                           "Remove it and draw it again.") from err
    return np.where(values >= 128, 255, 0).astype(np.uint8)


def new_correction_name(source_id: str, slice_id: str, taken_paths) -> str:
    """corrections/<source>/<name>.png: the slice id made safe for every file system, unique among
    `taken_paths` (the study's existing correction paths)."""
    stem = slice_id
    for suffix in _STRIPPED_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[:-len(suffix)]
            break
    safe = _UNSAFE_CHARS.sub("_", stem).strip("._ ")[:100] or "slice"
    digest = hashlib.sha1(slice_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    if safe != stem or safe.upper().split(".")[0] in _WINDOWS_RESERVED:
        safe = f"{safe}-{digest}"   # different ids must not end up with the same name
    taken = {PurePosixPath(rel).name.lower() for rel in taken_paths}
    name, n = f"{safe}.png", 1
    while name.lower() in taken:
        name = f"{safe}-{digest}.png" if n == 1 else f"{safe}-{digest}-{n}.png"
        n += 1
    return f"{CORRECTIONS_DIR}/{source_id}/{name}"
