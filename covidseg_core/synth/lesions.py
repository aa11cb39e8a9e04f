"""Synthetic COVID-19 lesions inserted into normal lung: exact pixel supervision from slices marked `clean`.

A lesion is a smooth random blob (an ellipse roughened by smoothed noise) of a few mm to a few cm, clipped to the
lung field, placed against the pleura most of the time (where COVID-19 lesions usually are). Its appearance is
set relative to the slice's own intensity levels, so the same code works on HU slices and on windowed or
contrast-stretched 8-bit images:

  a = the aerated lung level (median of the lung field), s = the soft-tissue level (just outside the lung);
  ground glass   adds  g * (s - a) * texture   (vessels stay visible: the change is additive),
  consolidation  pulls towards s with a little texture (vessels hidden).

In HU (a ~ -850, s ~ +40) g in [0.15, 0.8] is a raise of ~130-700 HU, the range of ground glass to dense
ground glass. The blend weight ramps from 0 at the mask's border to 1 a few pixels inside, so the edge is not a
step and no pixel outside the mask (or outside the lung field) ever changes. Everything is drawn from the
`numpy.random.Generator` passed in: the same seed gives the same lesions.

Defaults come from the ground-truth lesions of the zenodo-dev training volumes c01-c05 (lesion/lung area
per infected half slice: median 8 %, 90th percentile 39 %; 1-5 lesions per half slice; median lesion level
g = 0.37, 5-95 % 0.19-0.84): the radius range gives a synthetic area median of 11 % and 90th percentile of 34 %.
Real ground glass is uneven (partly aerated, reticular in places), so its raise is modulated by a texture of
random grain and amplitude (`patchiness`). A study's own infected slices can narrow the level range
(calibrate.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import ndimage as ndi

MIN_LUNG_PIXELS = 100     # a field smaller than this (apex, bases, no lung) gets no lesion
MIN_LESION_PIXELS = 8
RETRIES = 8


@dataclass(frozen=True)
class LesionParams:
    n_lesions: tuple[int, int] = (1, 4)           # per slice, inclusive
    radius: tuple[float, float] = (0.03, 0.45)    # of sqrt(lung area), drawn log-uniformly
    pleural_share: float = 0.7                    # lesions centred near the pleura
    ggo_level: tuple[float, float] = (0.15, 0.8)  # g: raise as a share of the lung-to-soft-tissue gap
    consolidation_share: float = 0.3
    # smaller lesions are ground glass only: a small dense blob reads as a vessel seen end-on, and teaching it
    # as a lesion made the segmenter mark vessels (the demo's clean slices)
    consolidation_min_radius: float = 0.12        # of sqrt(lung area), as `radius`
    roughness: tuple[float, float] = (0.25, 0.6)  # amplitude of the noise that roughens the outline
    ramp_px: float = 2.5                          # width of the soft edge inside the mask
    patchiness: tuple[float, float] = (0.2, 0.7)  # amplitude of the texture that makes ground glass uneven

    def __post_init__(self) -> None:
        checks = [(1 <= self.n_lesions[0] <= self.n_lesions[1], "n_lesions"),
                  (0 < self.radius[0] <= self.radius[1] <= 1, "radius"),
                  (0 <= self.pleural_share <= 1, "pleural_share"),
                  (0 < self.ggo_level[0] <= self.ggo_level[1] <= 1.5, "ggo_level"),
                  (0 <= self.consolidation_share <= 1, "consolidation_share"),
                  (0 <= self.consolidation_min_radius <= 1, "consolidation_min_radius"),
                  (0 <= self.patchiness[0] <= self.patchiness[1] <= 1, "patchiness"),
                  (self.ramp_px >= 0, "ramp_px")]
        bad = [name for ok, name in checks if not ok]
        if bad:
            raise ValueError(f"LesionParams out of range: {', '.join(bad)}")

    def with_levels(self, low: float, high: float) -> "LesionParams":
        return replace(self, ggo_level=(float(low), float(high)))


@dataclass(frozen=True)
class Levels:
    """Intensity levels of one slice: aerated lung and soft tissue, in the slice's own units."""
    lung: float
    tissue: float

    @property
    def gap(self) -> float:
        return self.tissue - self.lung


def intensity_levels(image: np.ndarray, lung: np.ndarray) -> Levels:
    """Aerated-lung level (median inside the field) and soft-tissue level (a shell around the field)."""
    image = np.asarray(image, dtype=np.float32)
    lung = np.asarray(lung, dtype=bool)
    a = float(np.median(image[lung])) if lung.any() else float(np.percentile(image, 10))
    shell = cv2.dilate(lung.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool) & ~lung
    values = image[shell] if shell.any() else image[~lung]
    s = float(np.percentile(values, 60)) if values.size else a
    spread = float(np.percentile(image, 99) - np.percentile(image, 1)) or 1.0
    return Levels(lung=a, tissue=max(s, a + 0.2 * spread))   # a slice without visible tissue still gets contrast


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return n / (float(n.std()) + 1e-6)


def _blob(lung: np.ndarray, centre: tuple[int, int], radius: float, roughness: float,
          rng: np.random.Generator) -> np.ndarray:
    h, w = lung.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.5, 1.0)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dy * np.cos(angle) + dx * np.sin(angle)) / radius
    v = (-dy * np.sin(angle) + dx * np.cos(angle)) / (radius * aspect)
    field = 1 - np.sqrt(u * u + v * v) + roughness * _smooth_noise(lung.shape, max(radius / 3, 1.5), rng)
    return (field > 0) & lung


def _soft_edge(mask: np.ndarray, ramp_px: float) -> np.ndarray:
    """Blend weight: 0 outside the mask, rising to 1 over `ramp_px` inside it (smoothed, never leaving it)."""
    if ramp_px <= 0:
        return mask.astype(np.float32)
    alpha = np.clip(ndi.distance_transform_edt(mask) / ramp_px, 0, 1).astype(np.float32)
    return ndi.gaussian_filter(alpha, 0.7) * mask


def synthesize(image: np.ndarray, lung: np.ndarray, rng: np.random.Generator,
               params: LesionParams | None = None, levels: Levels | None = None,
               value_range: tuple[float, float] | None = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """(image with lesions, bool mask of exactly the changed region) for one 2D slice and its lung field.

    `image` is in any units (HU, [0, 1], 0-255): levels are measured on it unless given. `value_range` clips the
    result (None for HU). A field smaller than MIN_LUNG_PIXELS gets no lesion: the image comes back unchanged.
    """
    p = params or LesionParams()
    img = np.asarray(image, dtype=np.float32)
    lung = np.asarray(lung, dtype=bool)
    if img.ndim != 2 or lung.shape != img.shape:
        raise ValueError(f"synthesize needs a 2D slice and a lung field of its shape, got {img.shape}, {lung.shape}")
    out = img.copy()
    mask = np.zeros(img.shape, dtype=bool)
    if lung.sum() < MIN_LUNG_PIXELS:
        return out, mask
    lv = levels or intensity_levels(img, lung)
    lung_size = float(np.sqrt(lung.sum()))
    depth = ndi.distance_transform_edt(lung)
    ys, xs = np.nonzero(lung)
    wanted = int(rng.integers(p.n_lesions[0], p.n_lesions[1] + 1))
    placed = attempts = 0
    while placed < wanted and attempts < wanted + RETRIES:      # a blob cut down to a speck by a small lung: retry
        attempts += 1
        radius = max(2.0, lung_size * float(np.exp(rng.uniform(*np.log(p.radius)))))
        near_pleura = np.flatnonzero(depth[ys, xs] < max(0.6 * radius, 2.0))
        pool = near_pleura if len(near_pleura) and rng.random() < p.pleural_share else np.arange(len(ys))
        j = int(pool[rng.integers(len(pool))])
        blob = _blob(lung, (int(ys[j]), int(xs[j])), radius, float(rng.uniform(*p.roughness)), rng)
        if blob.sum() < MIN_LESION_PIXELS:
            continue
        alpha = _soft_edge(blob, p.ramp_px)
        if rng.random() < p.consolidation_share and radius >= p.consolidation_min_radius * lung_size:
            strength = rng.uniform(0.75, 1.0)
            target = lv.tissue * 1.0 + lv.gap * (rng.uniform(-0.1, 0.05) + 0.05 * _smooth_noise(img.shape, 1.0, rng))
            out = out * (1 - alpha * strength) + alpha * strength * target
        else:
            # uneven ground glass (partly aerated, reticular in places), never darker than the lung it covers
            texture = np.maximum(1 + rng.uniform(*p.patchiness) * _smooth_noise(img.shape, rng.uniform(1.0, 3.0), rng),
                                 0.1)
            out = out + alpha * rng.uniform(*p.ggo_level) * lv.gap * texture
        mask |= blob
        placed += 1
    if value_range is not None:
        out = np.clip(out, *value_range)
    return out.astype(np.float32), mask
