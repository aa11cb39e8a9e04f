"""What the scanner adds: partial-volume blur in the slice plane and correlated quantum noise."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

BLUR_SIGMA = 0.55          # pixels: the reconstruction kernel's point spread
NOISE_HU = 15.0            # standard deviation of the noise
NOISE_GRAIN = 0.6          # pixels: noise is correlated over about a pixel, as filtered back-projection makes it


def scan(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur each slice (z, y, x) in-plane, add correlated noise, clip to the scanner's range."""
    out = ndimage.gaussian_filter(hu, (0, BLUR_SIGMA, BLUR_SIGMA))
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), (0, NOISE_GRAIN, NOISE_GRAIN))
    noise *= NOISE_HU / max(float(noise.std()), 1e-6)
    return np.clip(out + noise, -1024.0, 3071.0).astype(np.float32)
