"""The phantom's coordinate frame and the shapes everything is drawn with.

Positions are in "units": one unit is one pixel of a 128-pixel slice (1.4 mm at the demo's spacing), the image
spans -64..64 in x (patient right on the image's left) and y (anterior at the top), whatever the slice size, so the
anatomy is the same at every --size. The height of the chest, from the liver dome (t = 0, the first slice) to the
lung apex (t = 1, the last), is CHEST_HEIGHT units, whatever the number of slices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HALF_FOV = 64.0
CHEST_HEIGHT = 114.0       # units: 160 mm over 32 slices of 5 mm, as written in the NIfTI


@dataclass(frozen=True)
class Frame:
    """Pixel grid of one slice in units, and where the slices lie along the chest."""
    size: int
    n_slices: int

    @property
    def scale(self) -> float:
        """Pixels per unit."""
        return self.size / (2 * HALF_FOV)

    @property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        c = (np.arange(self.size, dtype=np.float32) + 0.5) / self.scale - HALF_FOV
        y, x = np.meshgrid(c, c, indexing="ij")
        return x, y

    @property
    def slab(self) -> float:
        """Slice spacing in units (a slice integrates a slab this thick)."""
        return CHEST_HEIGHT / max(self.n_slices - 1, 1)


def ellipse(x, y, cx, cy, rx, ry, angle=0.0):
    """Normalised radius: < 1 inside the ellipse, 1 on its border."""
    c, s = math.cos(angle), math.sin(angle)       # Python floats keep float32 grids in float32
    u, v = x - float(cx), y - float(cy)
    return np.sqrt(((u * c + v * s) / float(rx)) ** 2 + ((-u * s + v * c) / float(ry)) ** 2)


def superellipse(x, y, cx, cy, rx, ry, power):
    """Like ellipse() with |.|**power: a squarer outline, as a chest is."""
    p = float(power)
    return (np.abs((x - float(cx)) / float(rx)) ** p + np.abs((y - float(cy)) / float(ry)) ** p) ** (1.0 / p)


def capsule(x, y, ax, ay, bx, by):
    """Distance to the segment a-b (a tube seen from above)."""
    ax, ay, dx, dy = float(ax), float(ay), float(bx - ax), float(by - ay)
    h = np.clip(((x - ax) * dx + (y - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
    return np.hypot(x - ax - h * dx, y - ay - h * dy)


def _angle(x, y, cy):
    """Angle around (0, cy): 0 towards the back, +-pi towards the front."""
    return np.arctan2(x, y - float(cy))


class Shapes:
    """ellipse(), superellipse(), capsule() and angle() on one grid, remembered: most structures keep their shape
    from slice to slice."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self._memo: dict[tuple, np.ndarray] = {}

    def _remembered(self, shape, *args) -> np.ndarray:
        key = (shape.__name__,) + tuple(round(float(a), 3) for a in args)
        if key not in self._memo:
            self._memo[key] = shape(self.x, self.y, *args)
        return self._memo[key]

    def ellipse(self, *args) -> np.ndarray:
        return self._remembered(ellipse, *args)

    def superellipse(self, *args) -> np.ndarray:
        return self._remembered(superellipse, *args)

    def capsule(self, *args) -> np.ndarray:
        return self._remembered(capsule, *args)

    def angle(self, cy: float) -> np.ndarray:
        return self._remembered(_angle, cy)


def bump(t, centre, half):
    """Smooth 0..1..0 profile of t over centre +- half (how a structure's size varies along z)."""
    u = np.clip(1.0 - ((t - centre) / half) ** 2, 0.0, 1.0)
    return float(np.sqrt(u))


def ramp(t, t0, t1):
    """0 below t0, 1 above t1, smooth in between."""
    u = float(np.clip((t - t0) / (t1 - t0), 0.0, 1.0))
    return u * u * (3 - 2 * u)


def quantize(v: float, step: float = 0.25) -> float:
    """A size rounded to a quarter unit, so neighbouring sections share their outlines (Shapes remembers them)."""
    return round(v / step) * step


def smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (sigma in pixels)."""
    from scipy import ndimage

    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / max(float(n.std()), 1e-6)
