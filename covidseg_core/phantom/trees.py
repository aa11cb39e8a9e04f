"""Branching tubes in 3D (pulmonary vessels and the bronchi beside them) and how a CT slab sees them.

The vessel tree fills each lung the way real ones do: starting at the hilum, each branch runs to the centre of the
lung tissue it supplies, and that tissue is split in two along its longest axis for the two daughter branches, down
to a few cubic millimetres. Radii follow the amount of tissue supplied, so the vessels taper towards the periphery.
A slab sees the fraction of its thickness each tube fills (`rasterize`): vessels running across the slab read
as bright dots, vessels lying in it as fainter short segments, as on a 5 mm CT slice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frame import HALF_FOV, Frame


@dataclass
class Tubes:
    a: np.ndarray            # (k, 3) segment starts (x, y, height) in units
    b: np.ndarray            # (k, 3) segment ends
    ra: np.ndarray           # (k,) radius at the start
    rb: np.ndarray           # (k,) radius at the end

    @staticmethod
    def join(parts: list["Tubes"]) -> "Tubes":
        return Tubes(*(np.concatenate([getattr(p, f) for p in parts]) if parts else np.zeros((0, 3) if f in "ab" else 0)
                       for f in ("a", "b", "ra", "rb")))


def vessel_tree(points: np.ndarray, root: np.ndarray, root_radius: float, rng: np.random.Generator,
                leaf_points: int = 8) -> Tubes:
    """The tree supplying `points` (n, 3) from `root`; radius root_radius * (share of points) ** (1/3)."""
    n_all = len(points)
    segs_a, segs_b, ra, rb = [], [], [], []
    stack = [(root, root_radius, points)]
    while stack:
        start, r_start, pts = stack.pop()
        centre = pts.mean(axis=0)
        centred = pts - centre
        spread = float(np.sqrt((centred ** 2).mean())) if len(pts) > 1 else 0.5
        leaf = len(pts) < 2 * leaf_points
        # a branch runs towards the centre of what it supplies, and divides before it gets there; the smallest
        # run to it
        reach = 1.0 if leaf else 0.6
        node = start + reach * (centre - start) + rng.normal(0.0, 0.07 * spread, 3)
        r_node = root_radius * (len(pts) / n_all) ** (1 / 3)       # Murray's law: r^3 is shared
        # a slight bend halfway, so branches are not ruler-straight
        d = node - start
        length = float(np.linalg.norm(d))
        mid = start + d / 2 + _perpendicular(d, rng) * 0.08 * length
        r_mid = (r_start + r_node) / 2
        segs_a += [start, mid]
        segs_b += [mid, node]
        ra += [r_start, r_mid]
        rb += [r_mid, r_node]
        if leaf:
            continue
        axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
        proj = centred @ axis
        cut = np.median(proj)
        for half in (pts[proj <= cut], pts[proj > cut]):
            if len(half):
                stack.append((node, r_node, half))
    return Tubes(np.array(segs_a), np.array(segs_b), np.array(ra), np.array(rb))


def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to d."""
    v = rng.normal(size=3)
    v -= d * (v @ d) / max(float(d @ d), 1e-12)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def bronchi_beside(vessels: Tubes, rng: np.random.Generator, min_radius: float = 1.4) -> tuple[Tubes, Tubes]:
    """Bronchi run beside the arteries with about the same calibre: (outer wall, lumen) tubes for the vessel
    segments at least min_radius thick (thinner airways are not seen at this resolution)."""
    keep = np.minimum(vessels.ra, vessels.rb) >= min_radius
    a, b = vessels.a[keep], vessels.b[keep]
    lumen_a, lumen_b = 0.75 * vessels.ra[keep], 0.75 * vessels.rb[keep]
    wall = 0.15 * np.maximum(lumen_a, lumen_b) + 0.4
    d = b - a
    # on the same side of its artery all along (here: the side away from the patient's back and midline)
    side = np.cross(d, np.array([0.0, 0.0, 1.0])[None] + 0.3 * rng.normal(size=d.shape))
    side *= np.where((side[:, 1] > 0)[:, None], -1.0, 1.0)
    side /= np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-6)
    offset = side * (vessels.ra[keep] + lumen_a + wall + 0.3)[:, None]
    outer = Tubes(a + offset, b + offset, lumen_a + wall, lumen_b + wall)
    lumen = Tubes(a + offset, b + offset, lumen_a, lumen_b)
    return outer, lumen


def sub_slices(frame: Frame, step: float = 0.6) -> int:
    """How many thin sections each slab is sampled with, so that a thin tube lying in it is not missed."""
    return max(3, int(np.ceil(frame.slab / step)))


def rasterize(tubes: Tubes, frame: Frame, step: float = 0.4) -> np.ndarray:
    """Fraction (0..1) of each slab's voxels the tubes fill: (n_slices, size, size) float32."""
    m = sub_slices(frame)
    dsub = frame.slab / m
    n_sub = frame.n_slices * m
    size, s = frame.size, frame.scale
    occ = np.zeros((n_sub, size, size), np.float32)
    if len(tubes.a) == 0:
        return occ.reshape(frame.n_slices, m, size, size).mean(axis=1)
    # sample every tube along its axis
    lengths = np.linalg.norm(tubes.b - tubes.a, axis=1)
    counts = np.maximum(np.ceil(lengths / step).astype(int), 1) + 1
    seg = np.repeat(np.arange(len(lengths)), counts)
    frac = np.concatenate([np.linspace(0.0, 1.0, c) for c in counts])
    pos = tubes.a[seg] + (tubes.b[seg] - tubes.a[seg]) * frac[:, None]
    rad = tubes.ra[seg] + (tubes.rb[seg] - tubes.ra[seg]) * frac
    # each sample is a ball: it reaches the thin sections within its radius (at least the nearest one)
    h0 = -frame.slab / 2
    rz = np.maximum(rad, dsub / 2)
    lo = np.ceil((pos[:, 2] - rz - h0) / dsub - 0.5).astype(int)
    hi = np.floor((pos[:, 2] + rz - h0) / dsub - 0.5).astype(int)
    span = np.maximum(hi - lo + 1, 0)
    idx = np.repeat(np.arange(len(pos)), span)
    j = np.repeat(lo, span) + (np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span))
    ok = (j >= 0) & (j < n_sub)
    idx, j = idx[ok], j[ok]
    dh = (pos[idx, 2] - (h0 + (j + 0.5) * dsub)) / rz[idx]
    r_pix = rad[idx] * np.sqrt(np.clip(1.0 - dh * dh, 0.0, 1.0)) * s
    cx = (pos[idx, 0] + HALF_FOV) * s - 0.5
    cy = (pos[idx, 1] + HALF_FOV) * s - 0.5
    flat = occ.reshape(-1)
    lower = 0.0
    for upper in (0.5, 1.5, 2.5, 4.5, 7.5, np.inf):          # one window size per radius class
        sel = (r_pix > lower) & (r_pix <= upper)
        lower = upper
        if not sel.any():
            continue
        w = int(np.ceil(r_pix[sel].max() + 0.5))
        oy, ox = np.mgrid[-w:w + 1, -w:w + 1]
        px = np.round(cx[sel])[:, None] + ox.ravel()[None]
        py = np.round(cy[sel])[:, None] + oy.ravel()[None]
        dist = np.hypot(px - cx[sel][:, None], py - cy[sel][:, None])
        cover = np.clip(r_pix[sel][:, None] - dist + 0.5, 0.0, 1.0)
        inside = (px >= 0) & (px < size) & (py >= 0) & (py < size) & (cover > 0)
        flat_idx = (j[sel][:, None] * size + py.astype(int)) * size + px.astype(int)
        np.maximum.at(flat, flat_idx[inside], cover[inside].astype(np.float32))
    return occ.reshape(frame.n_slices, m, size, size).mean(axis=1)
