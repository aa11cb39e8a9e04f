"""Every resize in the project, in one place.

Scale rule (the same in training and prediction): a slice is processed with its longer side equal to the run's
`size` (aspect ratio kept; `size` None = native size); results go back to the slice's own size. Each function
below keeps the exact interpolation its caller has always used, so results do not change with where it lives:

- `working_shape`     the (h, w) a slice is processed at (also thumbnails in the app)
- `resize_stack`      torch (N, C, H, W): bilinear with antialiasing when shrinking, nearest for label maps
- `stack_to_torch`    numpy (n, H, W) -> torch (n, 1, h, w) through resize_stack (a read-only stack in chunks)
- `to_working_size`   numpy (n, H, W) images in [0, 1] -> the working size (through resize_stack)
- `upsample_maps`     torch bilinear for CAMs (coarse maps up to image size), clamped to [0, 1]
- `to_shape`          OpenCV for one 2D array back to a slice's native size (linear, or nearest for masks)
- `resize_nearest`    numpy nearest neighbour for display (no torch, no OpenCV: safe on the GUI thread)

torch and OpenCV are imported inside the functions that need them, so the app can use the numpy ones without
loading either.
"""
from __future__ import annotations

import numpy as np


def working_shape(h: int, w: int, size: int | None) -> tuple[int, int]:
    """(h, w) a slice is processed at: longer side = size, aspect kept; native when size is None."""
    if not size:
        return h, w
    scale = float(size) / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_stack(arr, shape: tuple[int, int], mode: str = "bilinear"):
    """torch (N, C, H, W) -> (N, C, *shape). Bilinear with antialiasing when shrinking; nearest for label maps."""
    import torch.nn.functional as F

    if tuple(arr.shape[-2:]) == tuple(shape):
        return arr
    if mode == "nearest":
        return F.interpolate(arr, size=shape, mode="nearest-exact")
    shrinking = shape[0] < arr.shape[-2] or shape[1] < arr.shape[-1]
    return F.interpolate(arr, size=shape, mode="bilinear", align_corners=False, antialias=shrinking)


READ_ONLY_CHUNK = 64      # slices copied at a time out of a read-only stack


def stack_to_torch(images01: np.ndarray, shape: tuple[int, int]):
    """numpy (n, H, W) -> torch float32 (n, 1, *shape) through resize_stack. A read-only stack (the slice cache's
    memory maps) is copied in chunks: no tensor may share a map (a write would crash), and a rank then holds the
    resized slices only, not a second full-size copy."""
    import torch

    arr = np.ascontiguousarray(images01, dtype=np.float32)
    if arr.flags.writeable:
        return resize_stack(torch.from_numpy(arr)[:, None], shape)
    parts = [resize_stack(torch.from_numpy(arr[i:i + READ_ONLY_CHUNK].copy())[:, None], shape)
             for i in range(0, len(arr), READ_ONLY_CHUNK)]
    return torch.cat(parts) if parts else torch.zeros((0, 1, *shape))


def to_working_size(images01: np.ndarray, size: int | None) -> np.ndarray:
    """(n, H, W) -> (n, h, w) float32 at the working size (longer side = size)."""
    h, w = working_shape(images01.shape[1], images01.shape[2], size)
    if (h, w) == tuple(images01.shape[1:]) and images01.flags.writeable:
        return np.ascontiguousarray(images01, dtype=np.float32)
    return stack_to_torch(images01, (h, w))[:, 0].numpy()


def upsample_maps(maps, shape: tuple[int, int]) -> np.ndarray:
    """(N, h, w) or (h, w) maps -> bilinearly resized to `shape`, float32 in [0, 1]."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    squeeze = t.ndim == 2
    t = t[None] if squeeze else t
    out = F.interpolate(t[:, None], size=tuple(shape), mode="bilinear", align_corners=False)[:, 0]
    out = out.clamp(0.0, 1.0).numpy()
    return out[0] if squeeze else out


def to_shape(arr: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    """One 2D array resized to `shape` with OpenCV: nearest for masks, linear for maps."""
    if tuple(arr.shape) == tuple(shape):
        return arr
    import cv2

    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (shape[1], shape[0]), interpolation=interp)


def resize_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes (display: a map made at the network's size shown on the
    slice, thumbnails)."""
    a = np.asarray(a)
    if a.shape[:2] == tuple(shape):
        return a
    ys = (np.arange(shape[0]) * a.shape[0] / shape[0]).astype(int)
    xs = (np.arange(shape[1]) * a.shape[1] / shape[1]).astype(int)
    return a[ys][:, xs]
