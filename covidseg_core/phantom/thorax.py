"""The chest wall and the skeleton: body outline, skin, subcutaneous fat, muscle, ribs, sternum, scapulae,
clavicles, the vertebra with its canal and processes, paraspinal muscles, and the scanner table.

`Thorax` holds the patient's build (drawn once per study from the seed); `paint(hu, h)` draws one thin section at
height h (units) into `hu` and returns the inside of the rib cage (where the mediastinum and the upper abdomen go,
without the spine) and the part of it the lungs may fill.
"""
from __future__ import annotations

import numpy as np

from . import tissues as T
from .frame import CHEST_HEIGHT, Shapes, quantize as _q, ramp

BODY_CY = -1.0
BACK = 43.0                 # units: the flattened back lying on the table
SPINE_Y = 23.0              # centre of the vertebral body
CANAL_Y = 35.0
VERTEBRA_HEIGHT = 17.0      # units (24 mm) from one disc to the next
DISC_HEIGHT = 3.5
RIB_SPACING = 15.0          # units between neighbouring ribs at the back
RIB_DROP = 75.0             # how much lower a rib's front end is than its back end (about four ribs)
RIB_HALF_HEIGHT = 3.2
APEX_T = 0.62               # above this the lungs narrow to their apices
WALL = 9.0                  # units from the body outline to the pleura at the sides


class Thorax:
    def __init__(self, rng: np.random.Generator, shapes: Shapes):
        self.g = shapes
        x, y = shapes.x, shapes.y
        self.width = float(rng.uniform(55.0, 58.0))
        self.rib_phase = float(rng.uniform(0.0, RIB_SPACING))
        self.level_phase = float(rng.uniform(0.0, VERTEBRA_HEIGHT))
        angle = np.arctan2(x, y - BODY_CY)                    # 0 at the back, +-pi at the front
        harmonics = rng.uniform(-0.7, 0.7, 4)                 # uneven subcutaneous fat, one build per seed
        self.fat_thick = np.maximum(2.6 + 1.0 * np.cos(2 * angle) ** 2 + sum(
            a * np.cos((k + 1) * angle + k) for k, a in enumerate(harmonics)), 1.2).astype(np.float32)
        self.front = (np.clip(-np.cos(angle), 0.0, 1.0) ** 2).astype(np.float32)
        self.side = (np.sin(angle) ** 2).astype(np.float32)

    # -- outlines ----------------------------------------------------------------------------------------------
    def body_size(self, t: float) -> tuple[float, float]:
        return _q(self.width + 3.0 * ramp(t, 0.6, 1.0)), 46.0      # shoulders widen the upper chest

    def cavity(self, t: float) -> tuple[float, float, float]:
        """(centre y, half width, half height) of the pleural cavity: largest at mid-chest, narrowing to the apex,
        where the lungs lie towards the back."""
        shrink = 1.0 if t < 0.42 else float(np.sqrt(max(1.0 - ((t - 0.42) / 0.85) ** 2, 0.05)))
        return _q(-4.0 + 8.0 * ramp(t, 0.6, 1.05)), _q((self.width - WALL) * shrink), _q(37.0 * (0.5 + 0.5 * shrink))

    @staticmethod
    def _depth(q, x, y, cy):
        """Approximate distance inside (> 0) or outside (< 0) an outline centred at (0, cy), given its
        normalised radius q."""
        r = np.hypot(x, y - cy)
        return (1.0 - q) * r / np.maximum(q, 1e-3)

    # -- drawing -----------------------------------------------------------------------------------------------
    def paint(self, hu: np.ndarray, h: float) -> np.ndarray:
        g, x, y = self.g, self.g.x, self.g.y
        t = h / CHEST_HEIGHT
        self._table(hu)
        bw, bh = self.body_size(t)
        depth = np.minimum(self._depth(g.superellipse(0.0, BODY_CY, bw, bh, 2.3), x, y, BODY_CY), BACK - y)
        body = depth > 0
        muscle_thick = 2.0 + 4.0 * self.front * ramp(t, 0.35, 0.8) + 1.2 * self.side   # pectorals up front
        hu[body] = T.FAT
        hu[body & (depth < 0.9)] = T.SKIN
        hu[body & (depth > self.fat_thick) & (depth < self.fat_thick + muscle_thick)] = T.MUSCLE
        cy, cw, ch = self.cavity(t)
        q_cav = g.superellipse(0.0, cy, cw, ch, 2.3)
        out = -self._depth(q_cav, x, y, cy)                    # distance outside the pleura
        deep = body & (depth >= self.fat_thick + muscle_thick) & (out > 0)
        hu[deep] = T.MUSCLE                                    # intercostal muscles
        if t < APEX_T:
            hu[deep & (out < 0.8) & (out > 0.2)] = T.FAT       # the extrapleural fat line
        self._paraspinal(hu, body)
        self._ribs(hu, h, cy, out, body)
        self._sternum_scapulae_clavicles(hu, t, cy, out, body)
        inner = (q_cav < 1.0) & ~self._spine(hu, h)
        lungs = inner
        if t > APEX_T:                                          # each lung ends in a rounded dome
            dome = float(np.sqrt(max(1.0 - ((t - APEX_T) / 0.42) ** 2, 0.05)))
            apices = np.zeros_like(inner)
            for side in (-1, 1):
                apices |= g.ellipse(side * _q(9.0 + 16.0 * dome), _q(cy + 6.0 * (1 - dome)),
                                    _q(27.0 * dome), _q(34.0 * dome)) < 1.0
            lungs = inner & apices
            hu[inner & ~apices] = T.MUSCLE                      # the muscles of the neck and shoulders
        return inner, lungs

    def _table(self, hu):
        x, y = self.g.x, self.g.y
        top = 47.0 + 0.0025 * x * x
        hu[(y > top) & (y < top + 4.0) & (np.abs(x) < 60)] = T.TABLE
        hu[(y > top + 0.9) & (y < top + 3.1) & (np.abs(x) < 59)] = T.TABLE_CORE

    def _paraspinal(self, hu, body):
        for side in (-1, 1):
            q = self.g.ellipse(side * 11.0, 37.0, 8.5, 6.0, side * 0.3)
            hu[(q < 1.0) & body] = T.MUSCLE
            plane = self.g.capsule(side * 8.0, 32.0, side * 14.0, 42.0) < 0.45
            hu[plane & (q < 1.0) & body] = T.FAT              # the fat plane between two muscle groups

    def _ribs(self, hu, h, cy, out, body):
        phi = np.abs(self.g.angle(cy))                          # 0 at the back, pi at the front, both sides
        start, end = 0.16 * np.pi, 0.92 * np.pi
        along = np.clip((phi - start) / (end - start), 0.0, 1.0)
        band = body & (phi > start) & (phi < end) & (out > 0.9) & (out < 4.3)
        first = int(np.floor((h - RIB_HALF_HEIGHT - self.rib_phase) / RIB_SPACING))
        for k in range(first, first + int(RIB_DROP / RIB_SPACING) + 2):
            back_height = self.rib_phase + k * RIB_SPACING
            if back_height < -20 or back_height > CHEST_HEIGHT - 2:
                continue                                        # below the costal margin or above the first rib
            dz = np.abs(back_height - RIB_DROP * along - h)
            rib = band & (dz < RIB_HALF_HEIGHT)
            if not rib.any():
                continue
            rim = (out < 1.8) | (out > 3.4) | (dz > RIB_HALF_HEIGHT - 1.0)
            cartilage = along > 0.8
            hu[rib & ~cartilage] = np.where(rim[rib & ~cartilage], T.CORTEX, T.MARROW)
            hu[rib & cartilage] = T.CARTILAGE

    @staticmethod
    def _bone(hu, mask, rim):
        hu[mask] = np.where(rim[mask], T.CORTEX, T.MARROW)

    def _sternum_scapulae_clavicles(self, hu, t, cy, out, body):
        g = self.g
        if 0.15 < t < 0.88:
            q = g.ellipse(0.0, -43.0, _q(8.0 - 2.5 * ramp(t, 0.5, 0.15)), 2.6)
            self._bone(hu, (q < 1.0) & body, q > 0.6)
        if t > 0.5:
            phi = g.angle(cy)
            reach = 0.05 + 0.13 * ramp(t, 0.5, 0.75)             # the scapulae, behind the upper ribs
            for side in (-1, 1):
                a = side * phi
                blade = body & (a > 0.13 * np.pi) & (a < (0.13 + reach) * np.pi)
                hu[blade & (out > 4.3) & (out < 9.0)] = T.MUSCLE
                hu[blade & (out > 6.3) & (out < 7.3)] = T.CORTEX
        if t > 0.9:
            for side in (-1, 1):
                d = g.capsule(side * 8.0, -43.5, side * 38.0, -37.0)
                self._bone(hu, (d < 2.6) & body, d > 1.6)

    def _spine(self, hu, h) -> np.ndarray:
        """Draw the vertebra (or its disc) and return the region it takes from the cavity."""
        g, y = self.g, self.g.y
        phase = (h + self.level_phase) % VERTEBRA_HEIGHT
        q_body = g.ellipse(0.0, SPINE_Y, 9.0, 8.0)
        if phase < DISC_HEIGHT:
            hu[q_body < 1.0] = T.DISC
        else:
            self._bone(hu, q_body < 1.0, q_body > 0.86)
        canal = g.ellipse(0.0, CANAL_Y, 4.5, 3.8)
        if phase > DISC_HEIGHT + 1.0:
            hu[(canal < 1.7) & (canal >= 1.0) & (y > SPINE_Y + 5.0)] = T.CORTEX
            for side in (-1, 1):
                d = g.capsule(side * 4.0, 33.0, side * 11.0, 35.5)
                self._bone(hu, d < 1.9, d > 1.0)
            if phase < 11.0:
                d = g.capsule(0.0, 39.5, 0.0, 41.5)
                self._bone(hu, d < 1.6, d > 0.8)
        hu[canal < 1.0] = T.CSF
        return (q_body < 1.25) | (canal < 2.2) | (g.ellipse(0.0, 33.0, 15.0, 6.0) < 1.0)
