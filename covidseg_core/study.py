"""Study: one CT scan (or a folder of 2D slices) as an array (z, y, x) with its geometry and slice ids.

Geometry follows SimpleITK's conventions so that masks exported through it line up in any viewer:
`spacing` and `origin` are (x, y, z) in mm (LPS), `direction` is the 3x3 matrix of axis cosines, row-major,
whose columns are the x, y and z axes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .imaging.windowing import to_unit_range

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class Study:
    array: np.ndarray                       # (z, y, x) float32: HU when is_hu, else plain intensities
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION
    slice_ids: list[str] = field(default_factory=list)   # stable per slice: SOPInstanceUID, file name or index
    is_hu: bool = True
    source: str = ""                        # the path it was read from
    kind: str = ""                          # "dicom" | "nifti" | "images"
    warnings: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # e.g. series uid, modality, labels read with the study

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Study array must be (z, y, x), got shape {self.array.shape}")
        if not self.slice_ids:
            self.slice_ids = [str(i) for i in range(self.array.shape[0])]
        if len(self.slice_ids) != self.array.shape[0]:
            raise ValueError("one slice id per slice is required")
        self.spacing = tuple(float(v) for v in self.spacing)
        self.origin = tuple(float(v) for v in self.origin)
        self.direction = tuple(float(v) for v in self.direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def n_slices(self) -> int:
        return int(self.array.shape[0])

    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical(self, z: float, y: float, x: float) -> np.ndarray:
        """Physical (LPS, mm) position of voxel index (z, y, x): origin + D @ (spacing * (x, y, z))."""
        ijk = np.array([x, y, z], dtype=float) * np.asarray(self.spacing)
        return np.asarray(self.origin) + self.direction_matrix() @ ijk

    def unit_range(self, z: int | None = None) -> np.ndarray:
        """What the networks see, in [0, 1] (imaging.windowing.to_unit_range): the whole volume, or slice z only
        (a 16-bit image slice is then scaled by its own percentiles)."""
        array = self.array if z is None else self.array[z]
        return to_unit_range(array, self.is_hu, self.meta.get("bits", 8))

    def slice_index(self, slice_id: str) -> int:
        return self.slice_ids.index(slice_id)

    def describe(self) -> dict:
        """A JSON-able summary (what `covidseg info` prints)."""
        finite = self.array[np.isfinite(self.array)]
        return {
            "source": self.source,
            "kind": self.kind,
            "slices": self.n_slices,
            "rows": int(self.array.shape[1]),
            "columns": int(self.array.shape[2]),
            "values": "HU" if self.is_hu else "intensity",
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "spacing": [round(v, 6) for v in self.spacing],
            "origin": [round(v, 6) for v in self.origin],
            "direction": [round(v, 6) for v in self.direction],
            "first_slice_id": self.slice_ids[0],
            "last_slice_id": self.slice_ids[-1],
            "warnings": list(self.warnings),
            **{k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool, list)) and k != "labels"},
        }
