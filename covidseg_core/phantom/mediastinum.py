"""The mediastinum and the upper abdomen: heart, aorta, pulmonary trunk, caval vein, trachea, oesophagus and
mediastinal fat; below the diaphragm domes the liver, stomach (with its air cap) and spleen.

Each structure is a shape whose size follows t (0 at the liver dome, 1 at the apex). `paint_mediastinum` and
`paint_abdomen` draw one thin section into `hu` and return the part of the pleural cavity they take from the lungs.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import tissues as T
from .frame import CHEST_HEIGHT, Shapes, bump, quantize as _q, ramp

CARINA_T = 0.64
TRACHEA_Y = 5.0
HILUM = {-1: (-19.0, -4.0, 0.56), 1: (19.0, -5.0, 0.54)}      # side: (x, y, t) where each lung's vessels enter
VEINS = {-1: (-11.0, 4.0, 0.44 * CHEST_HEIGHT), 1: (13.0, 3.0, 0.44 * CHEST_HEIGHT)}   # veins reach the atrium
DOMES = {-1: (-17.0, -8.0, 0.30), 1: (19.0, -6.0, 0.24)}       # side: (x, y, t of the top) of each diaphragm dome
DIAPHRAGM_T = 0.025


def _circle_structures(t: float) -> list[tuple[float, float, float, float, float]]:
    """(cx, cy, rx, ry, angle) of the round soft-tissue structures present at t (vessels seen end on)."""
    out = []
    descending = 5.5 + 6.0 * ramp(t, 0.05, 0.4)                  # the aorta drifts left as it rises
    if t < 0.78:
        out.append((descending, 14.0, 5.5, 5.5, 0.0))
    if 0.44 < t < 0.78:
        out.append((-4.0, -14.0, 6.5, 6.5, 0.0))                  # ascending aorta
    if 0.45 < t < 0.86:
        out.append((-13.0, -11.0, 4.5, 5.0, 0.0))                 # superior caval vein
    if 0.46 < t < 0.6:
        out.append((7.0, -17.0, 7.0, 6.5, 0.0))                   # pulmonary trunk
    if t > 0.84:
        out += [(-7.0, -13.0, 4.0, 4.0, 0.0), (2.0, -12.0, 3.0, 3.0, 0.0), (8.0, -6.0, 3.5, 3.5, 0.0),
                (-14.0, -14.0, 3.5, 3.0, 0.0), (12.0, -15.0, 3.5, 3.0, 0.0)]   # arch branches, brachiocephalic veins
    return out


def _tubes(t: float) -> list[tuple[float, float, float, float, float]]:
    """(ax, ay, bx, by, radius) of vessels seen along their length at t."""
    out = []
    if 0.77 < t < 0.85:
        out.append((-3.0, -15.0, 10.0, 8.0, 6.0))                 # the aortic arch
    if 0.54 < t < 0.6:
        out.append((4.0, -12.0, -18.0, -4.0, 4.5))                # right pulmonary artery
    if 0.56 < t < 0.63:
        out.append((8.0, -15.0, 19.0, -6.0, 4.5))                 # left pulmonary artery
    return out


def _heart(g: Shapes, t: float):
    """(heart, epicardial fat) at t: the ventricles pointing forward and left, the atria behind and to the right."""
    b = bump(t, 0.3, 0.26)
    if b <= 0.05:
        return None, None
    q = g.ellipse(7.0, -13.0, _q(16.0 * b + 2.0), _q(12.0 * b + 2.0), -0.6)
    heart = q < 1.0
    if 0.15 < t < 0.45:
        heart |= g.ellipse(-9.0, -5.0, 7.0, 8.0) < 1.0             # right atrium
    if 0.32 < t < 0.52:
        heart |= g.ellipse(4.0, 2.0, 10.0, 6.0, 0.2) < 1.0           # left atrium
    fat = (q > 0.86) & (q < 0.96) & ((g.x > 12.0) | (g.y < -22.0))   # epicardial fat along the free wall
    return heart, fat


def paint_mediastinum(hu, g: Shapes, t, cavity, above_diaphragm) -> np.ndarray:
    """Draw the mediastinum at t and return its region (which the lungs do not take)."""
    x, y = g.x, g.y
    region = np.zeros(x.shape, bool)
    heart, epicardial = _heart(g, t)
    if heart is not None:
        region |= ndimage.binary_dilation(heart, iterations=2) & above_diaphragm
        heart &= above_diaphragm
    solids = []
    for cx, cy, rx, ry, a in _circle_structures(t):
        solids.append(g.ellipse(cx, cy, rx, ry, a) < 1.0)
        region |= g.ellipse(cx, cy, rx + 1.5, ry + 1.5, a) < 1.0
    for ax, ay, bx, by, r in _tubes(t):
        d = g.capsule(ax, ay, bx, by)
        solids.append(d < r)
        region |= d < r + 1.5
    oesophagus = g.ellipse(3.0, 12.0, 4.0, 3.2)
    region |= oesophagus < 1.5
    trachea = g.ellipse(0.0, TRACHEA_Y, 7.0, 6.5) if t > CARINA_T else None
    if trachea is not None:
        region |= trachea < 1.35
    # the anterior mediastinum: narrow behind the sternum (where the lungs nearly meet), wider behind
    width = 1.5 + 0.14 * (y + 40.0) + 3.0 * ramp(t, 0.55, 0.85)
    region |= (np.abs(x - 1.5) < width) & (y < 16.0)
    region = ndimage.gaussian_filter(region.astype(np.float32), 1.5) > 0.5
    region &= cavity & above_diaphragm
    hu[region] = T.MEDIASTINAL_FAT
    inside = cavity & above_diaphragm
    for m in solids:
        hu[m & inside] = T.BLOOD
    if heart is not None:
        hu[heart & cavity] = T.BLOOD
        hu[heart & epicardial & cavity] = T.FAT
    hu[(oesophagus < 1.0) & inside] = T.SOFT
    hu[(oesophagus < 0.3) & inside] = T.AIR if t > 0.4 else T.SOFT   # a little air in its lumen
    if trachea is not None:
        hu[(trachea < 1.0) & cavity] = T.AIRWAY_WALL
        hu[(trachea < 0.8) & cavity] = T.AIR
    return region


def dome_height(x, y) -> np.ndarray:
    """t of the diaphragm's upper surface at each (x, y): two domes, lower at the back (costophrenic recesses)."""
    out = np.full(x.shape, -1.0, np.float32)
    for cx, cy, top in DOMES.values():
        dy = (y - cy) / 40.0
        dy = np.where(dy > 0, dy * 1.35, dy)
        out = np.maximum(out, top - 0.28 * (((x - cx) / 40.0) ** 2 + dy ** 2))
    return out


def paint_abdomen(hu, g: Shapes, t, cavity, domes: np.ndarray) -> np.ndarray:
    """Draw what lies below the diaphragm at t (`domes`: dome_height() on the grid); return where the lungs
    may be (above the diaphragm)."""
    y = g.y
    dome = domes
    below = cavity & (t < dome + DIAPHRAGM_T)
    if not below.any():
        return cavity
    hu[below] = T.MUSCLE                                             # the diaphragm
    organ = cavity & (t < dome)
    liver = organ & (g.ellipse(-16.0, 2.0, 44.0, 40.0, 0.45) < 1.0)      # the left lobe reaches across
    hu[organ] = T.SOFT
    hu[liver] = T.LIVER
    hu[organ & (g.ellipse(31.0, 12.0, 9.0, 14.0, 0.4) < 1.0)] = T.SPLEEN
    stomach = organ & ~liver & (g.ellipse(17.0, -15.0, 15.0, 11.0, -0.3) < 1.0)
    hu[stomach] = T.STOMACH
    hu[stomach & (y < -19.0)] = T.AIR                                  # air rises to the front (supine)
    return cavity & ~below
