"""Background cues for stage 1: a lung-field mask computed from the image itself, and a density saliency inside it.

Works on what the networks see: slices in [0, 1] (HU volumes through the lung window, 8-bit images as they are,
including per-slice contrast-stretched/CLAHE images, and half slices cut at the midline). Everything outside the
lung field is background; inside it, tissue denser than the slice's own aerated lung is salient.

The lung field must keep consolidations: they are as bright as soft tissue, so a plain threshold cuts them out
(an intensity-threshold mask leaves out about a quarter of the infection). After thresholding, each lung is
closed with a disk and its holes filled, and concave pleural notches are filled up to the lung's convex hull
where the hull adds little area (a bright crescent along the pleura) but not where it would swallow the heart.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

# Sizes are fractions of the image's short side (or area), so the same settings hold at any --size.
MIN_LUNG_AREA_FRAC = 0.004    # of the image area: smaller dark pockets are bowel gas, bronchi, noise
CLOSING_RADIUS_FRAC = 0.06    # closing disk: fills notches a few mm deep left by bright lesions
MAX_LUNGS = 2
HULL_MAX_GAIN = 0.5           # no hull fill for crescents (lung base over the liver dome): the hull adds more
HULL_REACH_FRAC = 0.1         # how far the convex-hull fill may reach from aerated lung
WALL_BAND_FRAC = 0.0          # depth of the shell inside the chest wall searched for consolidation (0 = off:
WALL_REACH_FRAC = 0.25        # measured on zenodo-dev it trades lung Dice for infection kept, see results)
WALL_PERCENTILE = 10.0        # chest-wall thickness = this percentile of skin distance along the lung border
MIN_SPREAD = 0.03             # saliency unit floor (45 HU in the lung window): noise in a flat lung is not salient


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1], on 256 bins of [0, 1].

    Written out on purpose: OpenCV's Otsu works on 8-bit levels, and on 224 of 232 slices tried (the demo and
    zenodo-dev) it moved up to 213 pixels between lung field and tissue, which would change every pseudo mask
    and every trained network; scikit-image (whose threshold_otsu takes a histogram) is not a dependency."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1e-12)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy * yy + xx * xx) <= r * r


def _outside_air(dark: np.ndarray) -> np.ndarray:
    """Dark components that touch two or more image sides are air around the body (a lung cut at the midline of
    a half slice touches one side only, so it stays)."""
    lab, n = ndi.label(dark)
    if n == 0:
        return np.zeros_like(dark)
    sides = [lab[0, :], lab[-1, :], lab[:, 0], lab[:, -1]]
    touches = np.zeros((n + 1, 4), dtype=bool)
    for s, edge in enumerate(sides):
        touches[np.unique(edge), s] = True
    outside_ids = np.flatnonzero(touches[:, :].sum(axis=1) >= 2)
    outside_ids = outside_ids[outside_ids > 0]
    return np.isin(lab, outside_ids)


def _morph(mask: np.ndarray, radius: int, op: int) -> np.ndarray:
    """Binary opening/closing with disk(radius), as scipy.ndimage does it (outside the image counts as
    background), but with OpenCV: scipy's binary morphology takes seconds per 512x512 slice with large disks."""
    kernel = disk(radius).astype(np.uint8)
    first, second = (cv2.erode, cv2.dilate) if op == cv2.MORPH_OPEN else (cv2.dilate, cv2.erode)
    m = first(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return second(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def binary_opening(mask: np.ndarray, radius: int) -> np.ndarray:
    return _morph(mask, radius, cv2.MORPH_OPEN)


def binary_closing(mask: np.ndarray, radius: int) -> np.ndarray:
    return _morph(mask, radius, cv2.MORPH_CLOSE)


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a 2D mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 3:
        return mask.copy()
    hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
    out = np.zeros(mask.shape, dtype=np.uint8)
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool) | mask


def lung_field(image01: np.ndarray, threshold: float | None = None, hull_reach: float = HULL_REACH_FRAC,
               closing_radius: float = CLOSING_RADIUS_FRAC, hull_max_gain: float = HULL_MAX_GAIN,
               wall_band: float = WALL_BAND_FRAC, wall_reach: float = WALL_REACH_FRAC) -> np.ndarray:
    """Bool mask of the lung fields of one slice in [0, 1] (HU in the lung window, or an 8-bit image / 255).

    `threshold` separates aerated lung from soft tissue (default: Otsu's threshold of the smoothed slice).
    `hull_reach`: the part of each lung's convex hull within this distance (fraction of the short side) of the
    aerated lung is added, which brings back dense lesions along the pleura without swallowing the heart.
    """
    img = np.asarray(image01, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"lung_field expects one 2D slice, got shape {img.shape}")
    h, w = img.shape
    short = min(h, w)
    smooth = ndi.gaussian_filter(img, sigma=max(short / 256.0, 0.5))
    t = otsu_threshold(smooth) if threshold is None else float(threshold)
    dark = binary_opening(smooth < t, max(1, round(short * 0.008)))
    outside = _outside_air(dark)
    inside = dark & ~outside
    # the body is the largest piece of what is not outside air, once thin bridges (to the scanner table) are cut;
    # the dark gap inside the table lies outside it
    body_lab, nb = ndi.label(binary_opening(~outside, max(2, round(short * 0.03))))
    body = None
    if nb:
        sizes = ndi.sum(np.ones_like(body_lab), body_lab, index=np.arange(1, nb + 1))
        body = ndi.binary_fill_holes(body_lab == 1 + int(np.argmax(sizes)))
        inside &= body
    # thin dark strips (the gap in the scanner table, skin folds) vanish under a wider opening; lungs do not
    seeds = binary_opening(inside, max(2, round(short * 0.04)))
    lab, n = ndi.label(inside)
    if n == 0 or not seeds.any():
        return np.zeros((h, w), dtype=bool)
    keep_ids = np.unique(lab[seeds])
    keep_ids = keep_ids[keep_ids > 0]
    areas = ndi.sum(np.ones_like(lab), lab, index=keep_ids)
    order = np.argsort(areas)[::-1][:MAX_LUNGS]
    min_area = MIN_LUNG_AREA_FRAC * h * w
    field = np.zeros((h, w), dtype=bool)
    radius = max(2, round(closing_radius * short))
    pad = radius + 1
    for rank, k in enumerate(order):
        if areas[k] < min_area or (rank > 0 and areas[k] < 0.15 * areas[order[0]]):
            continue
        lung = lab == keep_ids[k]
        # pad so the closing does not get stuck at the image edge (a lung cut at the midline)
        closed = binary_closing(np.pad(lung, pad), radius)[pad:-pad, pad:-pad]
        closed = ndi.binary_fill_holes(closed | lung)
        hull = _convex_hull(closed)
        if hull_reach > 0 and hull.sum() <= (1 + hull_max_gain) * closed.sum():
            near = ndi.distance_transform_edt(~closed) <= hull_reach * short
            closed |= hull & near
        field |= closed
    if body is not None and wall_band > 0 and field.any():
        field |= _between_lung_and_wall(field, body, short, wall_band, wall_reach)
    return field


def _between_lung_and_wall(field: np.ndarray, body: np.ndarray, short: int, band: float, reach: float) -> np.ndarray:
    """Tissue in the shell just inside the chest wall and next to the aerated lung: where a dense consolidation
    has replaced the lung against the pleura. The chest wall's thickness is taken where the lung touches it
    (a low percentile of the skin distance along the lung's border); the heart and mediastinum lie deeper in
    the body than this shell, so they stay out."""
    skin = ndi.distance_transform_edt(body)
    border = field & ~ndi.binary_erosion(field)
    if not border.any():
        return np.zeros_like(field)
    wall = float(np.percentile(skin[border], WALL_PERCENTILE))
    shell = body & (skin >= wall) & (skin <= wall + band * short)
    near = ndi.distance_transform_edt(~field) <= reach * short
    return shell & near


def lung_saliency(image01: np.ndarray, lung: np.ndarray, sigma_frac: float = 0.012) -> np.ndarray:
    """How much denser than the slice's own aerated lung each pixel is, in units of the lung's spread.

    0 at the median lung intensity (most lung pixels are aerated, even in a sick lung), 1 one inter-quartile
    range above it; smoothed a little so broad ground-glass stands out more than thin vessels. Zero outside
    the lung. Relative to each image, so it holds for HU slices and for contrast-stretched 8-bit images alike.
    """
    img = np.asarray(image01, dtype=np.float32)
    out = np.zeros(img.shape, dtype=np.float32)
    if not lung.any():
        return out
    # smoothing within the lung only (normalised convolution): the bright chest wall must not bleed into the rim
    sigma = max(sigma_frac * min(img.shape), 0.5)
    weight = ndi.gaussian_filter(lung.astype(np.float32), sigma=sigma)
    smooth = ndi.gaussian_filter(np.where(lung, img, 0.0).astype(np.float32), sigma=sigma) / np.maximum(weight, 1e-6)
    vals = smooth[lung]
    q25, med, q75 = np.percentile(vals, [25, 50, 75])
    spread = max(q75 - q25, MIN_SPREAD)
    out[lung] = (smooth[lung] - med) / spread
    return out


def density_prior(image01: np.ndarray, lung: np.ndarray, percentile: float = 70.0) -> np.ndarray:
    """The intensity-prior baseline: lung pixels denser than the given percentile of the lung's intensities."""
    img = np.asarray(image01, dtype=np.float32)
    if not lung.any():
        return np.zeros(img.shape, dtype=bool)
    return lung & (img > np.percentile(img[lung], percentile))
