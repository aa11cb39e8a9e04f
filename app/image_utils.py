"""Small display helpers: numpy arrays -> QImage/QPixmap thumbnails (display only, no analysis)."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QImage, QPixmap

from covidseg_core.imaging.resize import resize_nearest, working_shape

_LUT: np.ndarray | None = None


def heat_lut() -> np.ndarray:
    global _LUT
    if _LUT is None:
        _LUT = pg.colormap.get("inferno").getLookupTable(0.0, 1.0, 256, alpha=False).astype(np.uint8)
    return _LUT


def blend_heat(gray01: np.ndarray | None, heat01: np.ndarray, size: int = 112, alpha: float = 0.65) -> np.ndarray:
    """A thumbnail (h, w, 3) uint8: the slice in grey with an attention map blended on top."""
    ref = gray01 if gray01 is not None else heat01
    shape = working_shape(*ref.shape[:2], size)
    heat = np.clip(np.nan_to_num(resize_nearest(np.asarray(heat01, np.float32), shape)), 0, 1)
    color = heat_lut()[(heat * 255).astype(np.uint8)].astype(np.float32)
    if gray01 is None:
        return color.astype(np.uint8)
    g = np.clip(resize_nearest(np.asarray(gray01, np.float32), shape), 0, 1)[..., None] * 255.0
    a = (alpha * np.clip(heat * 1.5, 0, 1))[..., None]
    return (g * (1 - a) + color * a).astype(np.uint8)


def rgb_to_pixmap(rgb: np.ndarray) -> QPixmap:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy())     # copy: the QImage must not outlive the numpy buffer
