"""Predict infection masks with a trained run: image folders -> PNG masks, DICOM/NIfTI volumes -> NIfTI masks.

Scale rule (the same in training and here): every slice is resized so that its longer side equals the run's
`size` (aspect ratio kept; `size` null = native size), the network pads internally to a multiple of 16, and the
probabilities are resized back to the slice's own size before thresholding. So images of any size work, and a
slice is seen at the same scale relative to its field of view as in training (imaging/resize.py). `scales`
averages the probabilities of magnified working sizes too (an option, measured in docs/results.md, "Two scales at
prediction": it did not win on the training volumes, so the default is the run's own size alone). The masks
average each slice's probabilities with its left-right mirror image's (`MIRROR_AVERAGE`; "Mirror averaging of
the segmenter": as good on the training volumes, fewer marks on their clean slices, twice the network's work).
Intensities go through `Study.unit_range`, exactly as in training.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import ndimage as ndi

from ..atomic import atomic_write
from ..errors import InputError
from ..events import CancelToken, Done, Message, Progress
from ..imaging.resize import resize_stack, working_shape
from ..imaging.windowing import to_unit_range
from ..io.background import BackgroundWriter
from ..io.images import image_dir, list_images, read_gray
from ..io.loader import detect_kind, open_study
from ..io.nifti import volume_suffix, write_mask_nifti
from ..outputs import refuse_existing, refuse_protected, study_protected
from ..imaging.lung_model import compute_lung_fields
from .device import inference_autocast
from .model import LoadedModel, default_batch_size, load_run_model
from .postprocess import finish_masks

log = logging.getLogger(__name__)

THRESHOLD = 0.5
MIRROR_AVERAGE = True           # predict_masks' default (see the module's docstring)
LUNG_MARGIN_SLICES = 2          # slices on either side of the lung field's slices that are predicted too


def scaled_working_shapes(lm: LoadedModel, h: int, w: int, scales=(1.0,)) -> list[tuple[int, int]]:
    """The working sizes of an (h, w) slice at each magnification in `scales`: 1.0 is the run's own scale rule,
    1.25 works the slice with a longer side a quarter longer (the lesions look bigger to the network)."""
    base = lm.size or max(h, w)
    return [working_shape(h, w, round(s * base)) for s in scales]


def _engine_for(lm: LoadedModel, work: tuple[int, int]):
    """The ONNX session where it was exported at this working size, else None (PyTorch predicts)."""
    if lm.onnx is not None and tuple(work) == lm.onnx.input_hw:
        return lm.onnx
    if lm.onnx is not None:
        log.info("slices worked at %s, the ONNX export at %s: PyTorch predicts them", work, lm.onnx.input_hw)
    return None


def _probabilities(lm: LoadedModel, x: torch.Tensor, work: tuple[int, int], onnx, flip_average: bool):
    """Sigmoid probabilities of a batch x (n, 1, H, W) worked at `work`, returned at (H, W)."""
    h, w = x.shape[-2:]
    x = resize_stack(x, work)
    if flip_average:
        x = torch.cat([x, x.flip(-1)])
    if lm.device.type == "cpu" and onnx is None:
        x = x.contiguous(memory_format=torch.channels_last)
    if onnx is not None:
        logits = onnx(x)
    else:
        with inference_autocast(lm.device, lm.precision):
            logits = lm.model(x)
    prob = torch.sigmoid(logits.float())
    if flip_average:
        half = len(prob) // 2
        prob = (prob[:half] + prob[half:].flip(-1)) / 2
    return resize_stack(prob, (h, w))


def predict_probabilities(lm: LoadedModel, images01: np.ndarray, batch_size: int | None = None,
                          cancel: CancelToken | None = None, stage: str = "predict",
                          progress_of: tuple[int, int] | None = None, flip_average: bool = False,
                          on_batch: Callable[[int, np.ndarray], None] | None = None, scales=(1.0,)):
    """Generator: yields Progress; returns (via StopIteration.value) probabilities (n, H, W) float32 at the
    images' own size. `images01` (n, H, W) in [0, 1] (what Study.unit_range gives). `progress_of` = (done
    before, total) counts these images as part of a larger job in the Progress events. `flip_average`: the mean
    of the probabilities of each slice and its left-right mirror image (twice the network's work). `scales`: the
    mean of the probabilities of each slice worked at these magnifications (scaled_working_shapes; one network
    pass each). `on_batch` (start, probabilities of images start..start+len) is called as each batch is done."""
    n, h, w = images01.shape
    before, total = progress_of or (0, n)
    works = scaled_working_shapes(lm, h, w, scales)
    engines = [_engine_for(lm, work) for work in works]
    bs = batch_size or default_batch_size(lm.device, max(works, key=lambda hw: hw[0] * hw[1]))
    if flip_average and batch_size is None:
        bs = max(1, bs // 2)            # each slice goes through the network twice: the same memory per batch
    out = np.empty((n, h, w), dtype=np.float32)
    started = time.monotonic()
    with torch.inference_mode():
        for start in range(0, n, bs):
            if cancel is not None:
                cancel.raise_if_cancelled()
            x = torch.from_numpy(np.ascontiguousarray(images01[start:start + bs], dtype=np.float32))[:, None]
            x = x.to(lm.device)
            prob = sum(_probabilities(lm, x, work, onnx, flip_average) for work, onnx in zip(works, engines))
            out[start:start + len(x)] = (prob[:, 0] / len(works)).cpu().numpy()
            if on_batch is not None:
                on_batch(start, out[start:start + len(x)])
            done = min(start + bs, n)
            elapsed = time.monotonic() - started
            yield Progress(stage, before + done, total, "slices",
                           eta_s=elapsed / done * (n - done) if done < n else None)
    return out


def slices_to_predict(lungs: np.ndarray, margin: int = LUNG_MARGIN_SLICES) -> np.ndarray:
    """bool per slice: its lung field is not empty, or one of the `margin` slices on either side has one."""
    has_lung = np.asarray(lungs).reshape(len(lungs), -1).any(axis=1)
    if margin <= 0 or not has_lung.any():
        return has_lung
    return ndi.binary_dilation(has_lung, iterations=margin)


def predict_masks(lm: LoadedModel, images01: np.ndarray, batch_size: int | None = None,
                  cancel: CancelToken | None = None, threshold: float = THRESHOLD,
                  progress_of: tuple[int, int] | None = None, skip_without_lung: bool = True,
                  on_masks: Callable[[np.ndarray, np.ndarray], None] | None = None, scales=(1.0,),
                  flip_average: bool = MIRROR_AVERAGE):
    """Generator like predict_probabilities (`scales` and `flip_average` as there), returning uint8 0/1 masks:
    inside the lung field the run was trained with (imaging/lung_model.py), without specks (postprocess.py).

    The lung fields come first: the network then sees only the slices with lung (and LUNG_MARGIN_SLICES on either
    side); the others' masks are empty, as the lung field would make them anyway, so the masks are the same as
    when every slice is predicted (`skip_without_lung=False`). `on_masks(indices, masks)` is handed the final
    masks of some slices as soon as they are known (the caller starts writing them while the network goes on);
    the masks are finished slice by slice, so batch by batch gives the same masks as all at once."""
    n = len(images01)
    before, total = progress_of or (0, n)
    lungs = None
    keep = np.ones(n, bool)
    if lm.lung_method:
        lungs, warning = compute_lung_fields(images01, lm.lung_method, device=lm.device)
        if warning:
            yield Message(warning, "warning")
        if skip_without_lung:
            keep = slices_to_predict(lungs)
    masks = np.zeros(images01.shape, np.uint8)
    kept = np.flatnonzero(keep)
    if on_masks is not None and len(kept) < n:
        on_masks(np.flatnonzero(~keep), masks[~keep])      # empty: no lung, no infection

    def finish(start: int, prob: np.ndarray) -> None:
        idx = kept[start:start + len(prob)]
        masks[idx] = finish_masks(prob >= threshold, None if lungs is None else lungs[idx])
        if on_masks is not None:
            on_masks(idx, masks[idx])

    if len(kept) == n:
        yield from predict_probabilities(lm, images01, batch_size, cancel, progress_of=(before, total),
                                         on_batch=finish, scales=scales, flip_average=flip_average)
    elif len(kept):
        log.info("predicting %d of %d slices (the others hold no lung)", len(kept), n)
        yield from predict_probabilities(lm, images01[keep], batch_size, cancel,
                                         progress_of=(before + n - len(kept), total), on_batch=finish,
                                         scales=scales, flip_average=flip_average)
    else:
        yield Progress("predict", before + n, total, "slices")
    return masks


# --- inputs and outputs ------------------------------------------------------------------------------------

def _mask_name(image_name: str) -> str:
    """Prediction PNG name: the input's name, with .png as its suffix (PNG is lossless; a .jpg mask is not)."""
    p = Path(image_name)
    return p.name if p.suffix.lower() == ".png" else p.stem + ".png"


def volume_mask_name(source: Path) -> str:
    """<name>_mask.nii.gz for a NIfTI file ct.nii.gz -> ct_mask.nii.gz, or a DICOM folder -> <folder>_mask.nii.gz."""
    name = source.name
    suffix = volume_suffix(source) if source.is_file() else ""
    stem = name[: -len(suffix)] if suffix else name
    return f"{stem or 'study'}_mask.nii.gz"


def _image_files(folder: Path) -> list[Path]:
    src = image_dir(folder)
    files = list_images(src)
    if not files:
        raise InputError(f"No PNG/JPG images in {src}.", "Choose a folder with slice images, a DICOM folder "
                         "or a NIfTI file.")
    return files


def _input_protected(input_path: Path, kind: str) -> list[tuple[Path, str]]:
    """The input and, for a data set's images/ folder, the ground truth beside it (masks/)."""
    protected = study_protected(input_path, "the input")
    if kind == "images" and input_path.name == "images":
        protected.append((input_path.parent / "masks", "the ground-truth masks beside the input"))
    return protected


def _output_targets(input_path: Path, kind: str, out: Path) -> list[Path]:
    if kind == "images":
        return [out / _mask_name(p.name) for p in _image_files(input_path)]
    return [out / volume_mask_name(input_path)]


def check_outputs(input_path: Path, kind: str, out: Path, overwrite: bool) -> None:
    """Before any work: the masks go neither into the input nor over existing files (unless `overwrite`)."""
    protected = _input_protected(input_path, kind)
    hint = "Choose an --out folder outside the input data."
    refuse_protected(out, protected, hint)
    targets = _output_targets(input_path, kind, out)
    for target in targets:      # a mask file that is a link into the data is refused too
        refuse_protected(target, protected, hint)
    refuse_existing(targets, overwrite, "Choose an empty --out folder, or pass --overwrite to replace them.")


def _predict_image_folder(lm, folder: Path, out: Path, batch_size, cancel):
    files = _image_files(folder)
    arrays = _read_images(files, cancel)
    # slices of different sizes are allowed: predict them in groups of one size
    by_shape: dict[tuple, list[Path]] = {}
    for p in files:
        by_shape.setdefault(arrays[p].shape, []).append(p)
    out.mkdir(parents=True, exist_ok=True)
    with_infection = done = 0
    with BackgroundWriter() as writer:
        for group in by_shape.values():
            stack = np.stack([arrays[p] for p in group]).astype(np.float32)
            bits = 16 if any(arrays[p].dtype == np.uint16 for p in group) else 8
            images01 = to_unit_range(stack, is_hu=False, bits=bits)

            def write_masks(idx, masks, group=group):    # the masks of these slices are final: write them now
                for i, m in zip(idx, masks):
                    writer.submit(_write_mask_png, out / _mask_name(group[i].name), m)

            masks = yield from predict_masks(lm, images01, batch_size, cancel, progress_of=(done, len(files)),
                                             on_masks=write_masks)
            with_infection += int(masks.reshape(len(masks), -1).any(axis=1).sum())
            done += len(group)
    return {"kind": "images", "out": str(out), "n_images": done, "n_with_infection": with_infection}


def _read_images(files: list[Path], cancel) -> dict[Path, np.ndarray]:
    """Every file is read before any mask is written: a bad file among them leaves no output behind. On one
    thread: decoding small PNGs on two threads measured no faster (PIL's per-file Python work holds the GIL)."""
    arrays = {}
    for p in files:
        if cancel is not None:
            cancel.raise_if_cancelled()
        arrays[p] = read_gray(p)
    return arrays


def _write_mask_png(target: Path, mask: np.ndarray) -> None:
    from PIL import Image

    atomic_write(target, lambda tmp: Image.fromarray((mask * 255).astype(np.uint8)).save(tmp, format="PNG"))


def _predict_volume(lm, path: Path, out: Path, batch_size, cancel, series_uid=None):
    study = open_study(path, series_uid=series_uid)
    for w in study.warnings:
        yield Message(w, "warning")
    images01 = study.unit_range()          # as data.load_slice_set
    masks = yield from predict_masks(lm, images01, batch_size, cancel)
    out.mkdir(parents=True, exist_ok=True)
    target = out / volume_mask_name(path)
    write_mask_nifti(masks, study, target)
    return {"kind": study.kind, "out": str(target), "n_slices": int(study.n_slices),
            "slices_with_infection": int(masks.reshape(len(masks), -1).any(axis=1).sum()),
            "infected_voxels": int(masks.sum())}


def predict_job(run: str | Path, input_path: str | Path, out: str | Path, device: str = "auto",
                batch_size: int | None = None, cancel: CancelToken | None = None, series_uid: str | None = None,
                precision: str = "auto", overwrite: bool = False):
    """Generator job for `covidseg predict`: yields Progress/Message, ends with Done(summary dict). Refuses to
    write into the input, or over existing masks unless `overwrite`."""
    input_path, out = Path(input_path), Path(out)
    kind = detect_kind(input_path)
    check_outputs(input_path, kind, out, overwrite)
    lm = load_run_model(run, device, precision)
    if lm.note:
        yield Message(lm.note, "warning")
    yield Message(f"model of run {lm.run} (epoch {lm.epoch}) on {lm.device} ({lm.engine})")
    started = time.monotonic()
    if kind == "images":
        summary = yield from _predict_image_folder(lm, input_path, out, batch_size, cancel)
    else:
        summary = yield from _predict_volume(lm, input_path, out, batch_size, cancel, series_uid)
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["device"] = str(lm.device)
    summary["precision"] = precision if lm.onnx is None else "fp32"
    summary["engine"] = lm.engine
    log.info("prediction written to %s in %.1f s", summary["out"], summary["seconds"])
    yield Done(summary)


