"""COVID-19 pneumonia lesions: ground-glass opacities and consolidations, placed as the disease places them.

Lesions are mostly peripheral (subpleural) and posterior, in the lower and middle lung, from a few millimetres to
a few centimetres, with irregular soft edges. Each one is a 3D blob (an ellipsoid roughened by a few random waves)
so it grows and shrinks over neighbouring slices. Ground glass raises the lung's density by 100-500 HU and keeps
the vessels visible; a consolidation replaces the lung with soft-tissue density (-100..+40 HU) and hides them,
often with a ground-glass halo, and air bronchograms where bronchi cross it. Some ground glass carries a fine
reticular pattern (crazy paving).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from .frame import HALF_FOV, Frame

KINDS = ("ground-glass", "mixed", "consolidation")
KIND_P = (0.55, 0.3, 0.15)
CLUSTERS = 3


@dataclass
class Lesion:
    centre: np.ndarray        # (x, y, height) in units
    axes: np.ndarray          # half axes (along, across the pleura, vertical) in units
    angle: float              # in-plane orientation of the first axis
    kind: str
    raise_hu: float           # ground glass: density added to the lung
    solid_hu: float           # consolidation: density of the core
    waves: np.ndarray         # (k, 5): direction (3), spatial frequency, phase
    grain: np.ndarray         # (k, 4): directions (3) and phases of the texture's waves
    paving: bool

    def field(self, x, y, h) -> np.ndarray:
        """> 0 inside the lesion, 0 on its border (the ground-truth outline), negative outside; about 1 at the
        centre."""
        u, v = x - self.centre[0], y - self.centre[1]
        c, s = np.cos(self.angle), np.sin(self.angle)
        q = np.sqrt(((u * c + v * s) / self.axes[0]) ** 2 + ((-u * s + v * c) / self.axes[1]) ** 2
                     + ((h - self.centre[2]) / self.axes[2]) ** 2)
        rough = sum(np.sin(w[3] * (w[0] * u + w[1] * v + w[2] * (h - self.centre[2])) + w[4]) for w in self.waves)
        return 1.0 - q + 0.25 * rough / np.sqrt(len(self.waves))

    def texture(self, x, y, h, freq: float) -> np.ndarray:
        """A random field of about unit spread with waves of `freq` radians per unit; its zero lines form an
        irregular network (the septa of crazy paving)."""
        k = self.grain
        phase = k[:, 0] * x[..., None] + k[:, 1] * y[..., None] + k[:, 2] * h
        return np.sin(freq * phase + k[:, 3]).sum(axis=-1) / np.sqrt(len(k) / 2)

    def reach(self) -> float:
        return float(self.axes.max()) * 1.6


def _soft(f, width):
    u = np.clip(0.5 + f / width, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def place_lesions(rng: np.random.Generator, frame: Frame, lung: np.ndarray, count: int) -> list[Lesion]:
    """`count` lesions in the lungs of `lung` (n_slices, size, size) bool (one section per slice), in CLUSTERS
    groups along z in the lower two thirds of the chest (COVID-19 spares the apices more often than the bases):
    runs of infected slices with clean ones between them, above them and at the very base."""
    x, y = frame.grid
    s = frame.scale
    out = []
    edges = np.linspace(0.08, 0.7, CLUSTERS + 1)
    clusters = rng.uniform(edges[:-1], edges[1:])
    for i in range(count):
        t = float(np.clip(clusters[i % CLUSTERS] + rng.normal(0, 0.015), 0.0, 1.0))
        z = int(round(t * (frame.n_slices - 1)))
        sl = lung[z]
        if sl.sum() < 30 * s * s:
            continue
        depth = ndimage.distance_transform_edt(_hull(sl)) / s          # units from the chest wall
        weight = (np.exp(-depth / 5.0) + 0.08) * (1.0 + 2.0 * np.clip((y + 12.0) / 40.0, 0.0, 1.0)) * sl
        k = rng.choice(weight.size, p=(weight / weight.sum()).ravel())
        cy, cx = np.unravel_index(k, sl.shape)
        centre = np.array([x[cy, cx], y[cy, cx], z * frame.slab + rng.uniform(-0.5, 0.5) * frame.slab])
        # orientation along the pleura: across the gradient of the distance to it
        gy, gx = np.gradient(ndimage.gaussian_filter(depth, 2.0))
        angle = float(np.arctan2(gy[cy, cx], gx[cy, cx]) + np.pi / 2)
        size = float(np.exp(rng.uniform(np.log(2.5), np.log(22.0))))  # half size: 3.5 mm to 3 cm
        axes = np.array([size, size * rng.uniform(0.45, 0.9), min(size * rng.uniform(0.35, 0.7), 8.0)])
        kind = str(rng.choice(KINDS, p=KIND_P))
        # irregular outline: waves of a few wavelengths across the lesion, and finer ones
        freq = np.concatenate([rng.uniform(0.6, 1.4, 4) * 2.2 / size, rng.uniform(0.8, 1.2, 2) * 0.6])
        waves = np.column_stack([_unit(rng, 6), freq, rng.uniform(0, 2 * np.pi, 6)])
        grain = np.column_stack([_unit(rng, 8) * rng.uniform(0.8, 1.25, (8, 1)), rng.uniform(0, 2 * np.pi, 8)])
        out.append(Lesion(centre, axes, angle, kind, raise_hu=float(rng.uniform(180, 450)),
                          solid_hu=float(rng.uniform(-90, 35)), waves=waves, grain=grain,
                          paving=bool(kind == "ground-glass" and rng.random() < 0.35)))
    return out


def _hull(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of both lungs (so the mediastinal pleura does not count as periphery)."""
    ys, xs = np.nonzero(mask)
    hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
    out = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool)


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    v[:, 2] *= 0.6
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def lesion_maps(lesions: list[Lesion], frame: Frame, heights: np.ndarray, lung_sections: np.ndarray):
    """For each thin section at `heights` (with its lung mask): (presence 0..1, ground-glass raise in HU,
    consolidation weight 0..1, consolidation HU times that weight), each (len(heights), size, size)."""
    x, y = frame.grid
    shape = (len(heights),) + x.shape
    presence = np.zeros(shape, np.float32)
    raise_hu = np.zeros(shape, np.float32)
    solid = np.zeros(shape, np.float32)
    solid_hu = np.zeros(shape, np.float32)
    s = frame.scale
    for les in lesions:
        r = les.reach()
        near = np.flatnonzero(np.abs(heights - les.centre[2]) < les.axes[2] * 1.5)
        if not len(near):
            continue
        x0 = max(int((les.centre[0] - r + HALF_FOV) * s), 0)
        x1 = min(int(np.ceil((les.centre[0] + r + HALF_FOV) * s)) + 1, frame.size)
        y0 = max(int((les.centre[1] - r + HALF_FOV) * s), 0)
        y1 = min(int(np.ceil((les.centre[1] + r + HALF_FOV) * s)) + 1, frame.size)
        if x0 >= x1 or y0 >= y1:
            continue
        bx, by = x[y0:y1, x0:x1], y[y0:y1, x0:x1]
        for i in near:
            f = les.field(bx, by, heights[i])
            lung = lung_sections[i, y0:y1, x0:x1]
            w = _soft(f, 0.5 if les.kind == "ground-glass" else 0.3) * lung
            box = (i, slice(y0, y1), slice(x0, x1))
            presence[box] = np.maximum(presence[box], w)
            gg = w * les.raise_hu
            gg = gg * (1.0 + 0.25 * les.texture(bx, by, heights[i], 0.45))   # patchy, not flat
            if les.paving:                                         # thickened septa over the ground glass
                gg = gg * (1.0 + 0.45 * (np.abs(les.texture(bx, by, heights[i], 1.0)) < 0.3))
            raise_hu[box] = np.maximum(raise_hu[box], gg)
            if les.kind != "ground-glass":
                core = _soft(f - (0.35 if les.kind == "mixed" else 0.1), 0.2) * lung
                grow = core > solid[box]
                solid[box] = np.where(grow, core, solid[box])
                solid_hu[box] = np.where(grow, les.solid_hu, solid_hu[box])
    return presence, raise_hu, solid, solid_hu * solid
