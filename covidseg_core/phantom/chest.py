"""The synthetic chest CT: anatomy section by section, vessel and airway trees, lesions, then the scanner.

Each slice integrates a 5 mm slab; the anatomy and the lesions are drawn on SECTIONS thin sections across it and
averaged (partial volume along z: the diaphragm dome, rib edges and lesion ends read as intermediate densities).
The ground truth is where a lesion's presence reaches one half on the slice; lesions smaller than MIN_LESION_PIXELS
there are erased from both the image and the mask, so a slice is `infected` exactly when it shows a lesion.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import tissues as T
from .frame import CHEST_HEIGHT, Frame, Shapes, smooth_noise
from .lesions import lesion_maps, place_lesions
from .mediastinum import CARINA_T, HILUM, TRACHEA_Y, VEINS, dome_height, paint_abdomen, paint_mediastinum
from .scanner import scan
from .thorax import Thorax
from .trees import Tubes, bronchi_beside, rasterize, vessel_tree

SECTIONS = 3                  # thin sections per slab for the anatomy and the lesions
MIN_LESION_PIXELS = 4         # a smaller piece of lesion on a slice is not shown, and does not make it infected
TREE_POINTS = 2500            # lung samples each vessel tree is grown to supply
LESIONS = 9                   # lesions per study


def _section(thorax: Thorax, g: Shapes, domes: np.ndarray, h: float):
    """(HU, lung) of one thin section at height h."""
    t = h / CHEST_HEIGHT
    hu = np.full(g.x.shape, T.AIR, np.float32)
    inner, lungs = thorax.paint(hu, h)
    above_diaphragm = paint_abdomen(hu, g, t, inner, domes)
    mediastinum = paint_mediastinum(hu, g, t, inner, above_diaphragm)
    return hu, lungs & above_diaphragm & ~mediastinum


def _trees(rng, frame: Frame, lung: np.ndarray) -> dict[str, np.ndarray]:
    """Occupancy (n_slices, size, size) of the vessels, the airways in the lungs (outer wall and lumen) and the
    main bronchi in the mediastinum (outer wall and lumen)."""
    x, y = frame.grid
    vessels, outers, lumens, main_outer, main_lumen = [], [], [], [], []
    carina = np.array([0.0, TRACHEA_Y, CARINA_T * CHEST_HEIGHT])
    for side, (hx, hy, ht) in HILUM.items():
        z, iy, ix = np.nonzero(lung & (np.sign(x) == side)[None])
        if len(z) < 20:
            continue
        def points():
            pick = rng.choice(len(z), size=min(TREE_POINTS, len(z)), replace=False)
            jitter = rng.uniform(-0.5, 0.5, (len(pick), 3)) * np.array([1 / frame.scale, 1 / frame.scale, frame.slab])
            return np.column_stack([x[iy[pick], ix[pick]], y[iy[pick], ix[pick]], z[pick] * frame.slab]) + jitter

        hilum = np.array([hx, hy, ht * CHEST_HEIGHT])
        tree = vessel_tree(points(), hilum, 3.2, rng)                  # the artery, with its bronchus
        vessels += [tree, vessel_tree(points(), np.array(VEINS[side]), 2.8, rng)]
        outer, lumen = bronchi_beside(tree, rng)
        outers.append(outer)
        lumens.append(lumen)
        # the main bronchus runs from the carina to the hilum, behind the artery
        entry = hilum + np.array([-side * 1.5, 4.5, 1.0])
        r = 3.4 if side < 0 else 3.0
        main_outer.append(Tubes(carina[None], entry[None], np.array([r + 1.0]), np.array([r + 0.8])))
        main_lumen.append(Tubes(carina[None], entry[None], np.array([r]), np.array([r - 0.3])))
    parts = dict(vessel=vessels, outer=outers, lumen=lumens, main_outer=main_outer, main_lumen=main_lumen)
    return {k: rasterize(Tubes.join(v), frame) for k, v in parts.items()}


def _shown_lesions(presence: np.ndarray, lung_frac: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(mask, keep): the ground truth of one slice without pieces under MIN_LESION_PIXELS, and a soft 0..1 map
    of where lesion density may be drawn (the kept lesions and their soft edges)."""
    mask = (presence >= 0.5) & (lung_frac >= 0.5)
    lab, n = ndimage.label(mask)
    if n:
        sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
        mask = np.isin(lab, 1 + np.flatnonzero(sizes >= MIN_LESION_PIXELS))
    if not mask.any():
        return mask, np.zeros(mask.shape, np.float32)
    reach = max(1, int(round(4 * scale)))
    keep = ndimage.binary_dilation(mask, iterations=reach).astype(np.float32)
    return mask, ndimage.gaussian_filter(keep, max(reach / 2, 0.5))


def chest_ct(seed: int, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(HU (z, y, x) float32, infection ground truth (z, y, x) uint8) of a synthetic chest CT."""
    rng = np.random.default_rng(seed)
    frame = Frame(size, n_slices)
    x, y = frame.grid
    g = Shapes(x, y)
    domes = dome_height(x, y)
    thorax = Thorax(rng, g)
    offsets = (np.arange(SECTIONS) + 0.5) / SECTIONS - 0.5
    heights = (np.arange(n_slices)[:, None] + offsets[None]).ravel() * frame.slab
    sections = [_section(thorax, g, domes, h) for h in heights]
    tissue = np.stack([s[0] for s in sections]).reshape(n_slices, SECTIONS, size, size)
    lung_s = np.stack([s[1] for s in sections])
    lung_sub = lung_s.reshape(n_slices, SECTIONS, size, size)
    lung_frac = lung_sub.mean(axis=1)
    not_lung = ~lung_sub
    outside = (tissue * not_lung).sum(axis=1) / np.maximum(not_lung.sum(axis=1), 1)
    lung_mid = lung_sub[:, SECTIONS // 2]

    tubes = _trees(rng, frame, lung_mid)
    lesions = place_lesions(rng, frame, lung_mid, LESIONS)
    presence, raise_hu, solid, solid_hu = (m.reshape(n_slices, SECTIONS, size, size).mean(axis=1)
                                           for m in lesion_maps(lesions, frame, heights, lung_s))
    solid_hu = solid_hu / np.maximum(solid, 1e-6)

    # the lung: denser at the back (gravity), a fine texture of small vessels and interstitium
    dependent = 45.0 * np.clip((y + 30.0) / 60.0, 0.0, 1.0)
    hu = np.empty((n_slices, size, size), np.float32)
    mask = np.zeros((n_slices, size, size), np.uint8)
    # bronchi are drawn in and just around the lungs (where their walls meet the pleura), never in the heart
    near_lung = ndimage.binary_dilation(lung_frac > 0.3, iterations=1, structure=np.ones((1, 3, 3), bool))
    wall = np.clip(tubes["outer"] - tubes["lumen"], 0, 1) * near_lung
    lumen = tubes["lumen"] * near_lung
    wall = np.maximum(wall, np.clip(tubes["main_outer"] - tubes["main_lumen"], 0, 1))
    lumen = np.maximum(lumen, tubes["main_lumen"])
    for z in range(n_slices):
        shown, keep = _shown_lesions(presence[z], lung_frac[z], frame.scale)
        mask[z] = shown
        texture = 16.0 * smooth_noise(rng, (size, size), 0.7) + 10.0 * smooth_noise(rng, (size, size), 3.0)
        lung_hu = T.LUNG + dependent + texture + raise_hu[z] * keep
        lung_hu += (T.BLOOD - lung_hu) * tubes["vessel"][z]
        lung_hu += (solid_hu[z] - lung_hu) * solid[z] * keep       # consolidation hides the vessels
        sl = lung_frac[z] * lung_hu + (1.0 - lung_frac[z]) * outside[z]
        sl += (T.AIRWAY_WALL - sl) * wall[z]
        sl += (T.AIR - sl) * lumen[z]                                # air bronchograms inside consolidation
        hu[z] = sl
    return scan(hu, rng), mask
