"""A lung field learned from expert lung masks: a compact U-Net, its packaged weights, and the fallback.

Input: slices in [0, 1] as the pipeline feeds them everywhere (HU through the lung window W1500/L-600, 8-bit
images / 255), any size: half slices (256x128), whole slices, 512x512 DICOM. Each slice is resized so that its
longer side is `work_size` (aspect kept), padded to a multiple of 16, and the lung probability is upsampled
back to the slice's own size. Post-processing keeps at most the two largest lung components above a small area
and fills their holes, so a slice without lung (above the apex, below the bases) gets an empty field.

The weights ship as `covidseg_core/resources/lung_field.safetensors` (trained by scripts/train_lung_model.py,
see lung_field.md beside it); the architecture options are stored in the file's metadata, so loading needs
nothing but this module. A missing or damaged file raises LungModelError; `compute_lung_fields` then falls
back to the threshold method with a warning.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

from ..constants import LUNG_METHODS
from ..errors import CovidSegError

log = logging.getLogger(__name__)

ARCH_NAME = "lungnet-unet"
FORMAT_VERSION = "1"
DEFAULT_WIDTHS = (8, 16, 32, 48, 64)
DEFAULT_WORK_SIZE = 128          # longer side of the network's input, in pixels
PAD_MULTIPLE = 16                # four 2x poolings
THRESHOLD = 0.4                  # field cut: 0.5 lost 4 % of the infection (docs/results_lung_field.md, stop 34)
MAX_LUNGS = 2
MIN_LUNG_AREA_FRAC = 0.004       # of the slice area: smaller pieces are not a lung (bowel gas, a cut apex)
HOLE_MAX_FRAC = 0.05             # holes up to this share of their lung are filled (vessels, lesions the net
                                 # doubted); larger ones are the liver dome or heart seen through a lung
WEIGHTS_NAME = "lung_field.safetensors"
RETRAIN_HINT = ("Reinstall CovidSeg Assist to restore the file, or train a new one with "
                "scripts/train_lung_model.py --out <file>; the threshold lung field needs no file.")
MIRROR_AVERAGE = True           # average with the mirrored slice's probabilities (docs/results_lung_field.md)
MIN_AERATED_SHARE = 0.2         # of a lung component's pixels below the slice's dark (Otsu) threshold
METHODS = LUNG_METHODS


class LungModelError(CovidSegError):
    """The lung-field model file is missing, damaged or of an unknown kind."""


def default_weights_path() -> Path:
    """The weights shipped inside the package (covidseg_core/resources/)."""
    return Path(str(resources.files("covidseg_core") / "resources" / WEIGHTS_NAME))


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


class LungNet(nn.Module):
    """U-Net with plain double 3x3 conv blocks, max-pool down, bilinear up; one logit per pixel.

    `widths` gives the channels of each level (len(widths) - 1 poolings); the input's sides must be
    multiples of 2 ** (len(widths) - 1).
    """

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS, work_size: int = DEFAULT_WORK_SIZE):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.work_size = int(work_size)
        self.encoder = nn.ModuleList()
        prev = 1
        for w in self.widths:
            self.encoder.append(_Block(prev, w))
            prev = w
        self.decoder = nn.ModuleList(_Block(self.widths[i + 1] + self.widths[i], self.widths[i])
                                     for i in reversed(range(len(self.widths) - 1)))
        self.head = nn.Conv2d(self.widths[0], 1, 1)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)

    def options(self) -> dict[str, str]:
        """What the safetensors metadata must hold to rebuild this network (all values strings)."""
        return {"arch": ARCH_NAME, "format_version": FORMAT_VERSION,
                "widths": json.dumps(list(self.widths)), "work_size": str(self.work_size)}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- geometry shared by training and inference --------------------------------------------------------------

def work_shape(h: int, w: int, work_size: int = DEFAULT_WORK_SIZE, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """(h, w) resized so that the longer side is work_size, aspect kept (before padding)."""
    scale = work_size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def padded_shape(h: int, w: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def to_work(images01: np.ndarray, work_size: int = DEFAULT_WORK_SIZE,
            multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, tuple[int, int]]:
    """(n, H, W) in [0, 1] -> (n, h', w') float32 at the working size, edge-padded to a multiple; and (h, w)
    of the unpadded resized content (top-left)."""
    n, h, w = images01.shape
    rh, rw = work_shape(h, w, work_size)
    ph, pw = padded_shape(rh, rw, multiple)
    out = np.empty((n, ph, pw), dtype=np.float32)
    interp = cv2.INTER_AREA if rh <= h else cv2.INTER_LINEAR
    for i in range(n):
        small = cv2.resize(images01[i], (rw, rh), interpolation=interp)
        out[i] = np.pad(small, ((0, ph - rh), (0, pw - rw)), mode="edge")
    return out, (rh, rw)


# --- post-processing ----------------------------------------------------------------------------------------

def dark_pixels(image01: np.ndarray) -> np.ndarray:
    """Pixels at or below the slice's Otsu threshold (OpenCV, on 8 bits): air and aerated lung, as opposed to
    tissue, in the lung window as in a stretched 8-bit image."""
    img8 = np.round(np.clip(image01, 0, 1) * 255).astype(np.uint8)
    t, _ = cv2.threshold(img8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return img8 <= t


def clean_field(mask: np.ndarray, image01: np.ndarray | None = None, max_lungs: int = MAX_LUNGS,
                min_area_frac: float = MIN_LUNG_AREA_FRAC, hole_max_frac: float = HOLE_MAX_FRAC,
                min_aerated: float = MIN_AERATED_SHARE) -> np.ndarray:
    """At most `max_lungs` largest components above min_area_frac of the slice, with their small holes filled.
    With the slice given, a component of which less than `min_aerated` lies below the slice's dark threshold
    is dropped: a lung holds aerated parenchyma even when it is sick, a soft-tissue blob below the lung bases
    does not. An empty result is a valid answer (no lung on this slice)."""
    mask = np.asarray(mask, dtype=bool)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask)
    areas = stats[1:, cv2.CC_STAT_AREA]
    min_area = min_area_frac * mask.size
    candidates = [1 + int(k) for k in np.argsort(areas)[::-1] if areas[k] >= min_area]
    if image01 is not None and min_aerated > 0 and candidates:
        dark = dark_pixels(image01)
        dark_count = np.bincount(lab[dark].ravel(), minlength=n)
        candidates = [k for k in candidates if dark_count[k] >= min_aerated * areas[k - 1]]
    field = np.zeros_like(mask)
    for k in candidates[:max_lungs]:
        # within the component's bounding box (plus a ring of background): its holes are the same as in the
        # whole slice, at a fraction of the cost on 512 x 512 volumes
        x, y, w, h = (int(v) for v in stats[k, :4])
        box = (slice(max(y - 1, 0), y + h + 1), slice(max(x - 1, 0), x + w + 1))
        lung = lab[box] == k
        filled = ndi.binary_fill_holes(lung)
        holes, nh = ndi.label(filled & ~lung)
        if nh:
            hole_areas = np.bincount(holes.ravel())[1:]
            small = np.flatnonzero(hole_areas <= hole_max_frac * areas[k - 1]) + 1
            lung |= np.isin(holes, small)
        field[box] |= lung
    return field


# --- loading ------------------------------------------------------------------------------------------------

def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors (sorted by name) as stored: a flipped byte anywhere in the weights changes it,
    which the safetensors format itself does not check."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(tensors[name].shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LungModelError(f"The lung-field model file {path} is damaged and cannot be read "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}).",
                             RETRAIN_HINT) from exc
    return tensors, metadata


def _build_from_metadata(path: Path, metadata: dict[str, str]) -> LungNet:
    if metadata.get("arch") != ARCH_NAME:
        raise LungModelError(f"{path} is not a CovidSeg lung-field model (its metadata names "
                             f"arch={metadata.get('arch')!r}, expected {ARCH_NAME!r}).", RETRAIN_HINT)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise LungModelError(f"{path} is a lung-field model of format {metadata.get('format_version')!r}; this "
                             f"version of CovidSeg reads format {FORMAT_VERSION!r}.", RETRAIN_HINT)
    try:
        widths = tuple(int(w) for w in json.loads(metadata["widths"]))
        work_size = int(metadata["work_size"])
        if not widths or min(widths) < 1 or work_size < 16:
            raise ValueError("widths/work_size out of range")
    except (KeyError, ValueError, TypeError) as exc:
        raise LungModelError(f"The lung-field model file {path} has damaged architecture metadata ({exc}).",
                             RETRAIN_HINT) from exc
    return LungNet(widths, work_size)


def load_lung_model(path: str | Path | None = None, device: str | torch.device | None = None) -> LungNet:
    """The lung-field network from a safetensors file (default: the one shipped in the package), in eval mode
    on `device` (default: CUDA when available, else the CPU). LungModelError when the file is missing,
    damaged, or does not match the architecture."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise LungModelError(f"The lung-field model file {path} is missing.", RETRAIN_HINT)
    tensors, metadata = _read_weights(path)
    model = _build_from_metadata(path, metadata)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise LungModelError(f"The lung-field model file {path} does not match the network its metadata "
                             f"describes ({str(exc).splitlines()[0]}).", RETRAIN_HINT) from exc
    if weights_digest(tensors) != metadata.get("sha256"):
        raise LungModelError(f"The lung-field model file {path} is damaged: its weights do not match the "
                             "checksum stored with them.", RETRAIN_HINT)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(torch.device(device)).eval()


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, device: str, stamp: tuple[int, int]) -> LungNet:
    """One load per file version (`stamp` = size, mtime) and device."""
    return load_lung_model(path, device)


def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


# --- prediction ---------------------------------------------------------------------------------------------

def finite(images01) -> np.ndarray:
    """float32 slices with NaN as 0 and infinities as 0 / 1; the caller's array itself (no copy) when all are
    finite already, as they nearly always are: two copies of a 512 x 512 x 300 volume cost seconds."""
    images = np.asarray(images01, dtype=np.float32)
    if np.isfinite(images).all():
        return images
    return np.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)


def _network_probabilities(model: LungNet, images: np.ndarray) -> np.ndarray:
    """One batch of slices (n, H, W) -> the network's probabilities at their own size."""
    n, h, w = images.shape
    work, (rh, rw) = to_work(np.clip(images, 0.0, 1.0), model.work_size, model.multiple)
    x = torch.from_numpy(work).unsqueeze(1).to(next(model.parameters()).device)
    prob = torch.sigmoid(model(x).float())[:, :, :rh, :rw]
    return F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)[:, 0].cpu().numpy()


def predict_lung_probabilities(model: LungNet, images01: np.ndarray, batch_size: int = 16,
                               mirror: bool = MIRROR_AVERAGE) -> np.ndarray:
    """(n, H, W) in [0, 1] -> (n, H, W) float32 lung probabilities at the slices' own size. `mirror`: the mean
    with the probabilities of the left-right mirrored slices (twice the network time; measured in
    docs/results_lung_field.md: fewer misses at the lung's edge, above all on half slices). Batch by batch, so a
    large volume is never copied whole for the mirrored pass."""
    images = finite(images01)
    if images.ndim != 3:
        raise ValueError(f"expected slices (n, H, W), got shape {images.shape}")
    out = np.zeros(images.shape, dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            prob = _network_probabilities(model, batch)
            if mirror:
                prob += _network_probabilities(model, np.ascontiguousarray(batch[:, :, ::-1]))[:, :, ::-1]
                prob *= 0.5
            out[start:start + batch_size] = prob
    return out


def predict_lung_fields(model: LungNet, images01: np.ndarray, batch_size: int = 16,
                        threshold: float = THRESHOLD, mirror: bool = MIRROR_AVERAGE) -> np.ndarray:
    """(n, H, W) in [0, 1] -> bool (n, H, W) lung fields (a 2D slice gives a 2D field)."""
    images = np.asarray(images01)
    if images.ndim == 2:
        return predict_lung_fields(model, images[None], batch_size, threshold, mirror)[0]
    prob = predict_lung_probabilities(model, images, batch_size, mirror)
    if not len(prob):
        return prob.astype(bool)
    images = finite(images)       # dark_pixels clips to [0, 1] itself
    return np.stack([clean_field(p > threshold, img) for p, img in zip(prob, images)])


def threshold_lung_fields(images01: np.ndarray) -> np.ndarray:
    """The image-threshold lung field (imaging/lungs.py), slice by slice: the fallback and the baseline."""
    from .lungs import lung_field

    images = np.asarray(images01, dtype=np.float32)
    if images.ndim == 2:
        return lung_field(images)
    return np.stack([lung_field(s) for s in images]) if len(images) else np.zeros(images.shape, dtype=bool)


def compute_lung_fields(images01: np.ndarray, method: str = "model", path: str | Path | None = None,
                        device: str | torch.device | None = None) -> tuple[np.ndarray, str | None]:
    """Lung fields of (n, H, W) slices in [0, 1] -> (bool fields, warning or None).

    method "model": the learned lung field; when its weights file is missing or damaged, the threshold field is
    used instead and the returned (and logged) warning says why. method "threshold": the threshold field.
    """
    if method not in METHODS:
        raise ValueError(f"unknown lung-field method {method!r} (choose one of {', '.join(METHODS)})")
    if method == "threshold":
        return threshold_lung_fields(images01), None
    path = Path(path) if path is not None else default_weights_path()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = _cached_model(str(path.resolve()), str(device), _file_stamp(path))
    except LungModelError as exc:
        warning = f"{exc.message} The threshold lung field is used instead. {exc.hint.split(';')[0]}."
        log.warning(warning)
        return threshold_lung_fields(images01), warning
    return predict_lung_fields(model, images01), None
