"""`covidseg evaluate`: compare a folder of predicted masks with a folder of ground-truth masks, by file name.

Both are PNG (or other image) masks; a pixel is infection when its value is above 127 (so 0/255 masks, and
stage-1 pseudo masks whose 127 means "ignore", both read right). A ground-truth mask whose prediction is missing
is an error: a silently shorter list would inflate or deflate the scores.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from ..errors import InputError
from ..io.images import IMAGE_SUFFIXES, read_gray
from .metrics import summarize

log = logging.getLogger(__name__)


def _mask_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"The {what} folder {folder} does not exist.", "Check the path.")
    if what == "ground-truth" and (folder / "masks").is_dir() and not any(
            p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file()):
        folder = folder / "masks"          # a data-set folder was given: its masks/ hold the ground truth
    files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise InputError(f"No mask images in the {what} folder {folder}.", "Point at a folder of PNG masks.")
    return files


def _find_prediction(name: str, preds: dict[str, Path]) -> Path | None:
    if name in preds:
        return preds[name]
    png = Path(name).stem + ".png"      # `predict` writes .png masks for .jpg inputs
    return preds.get(png)


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path) -> dict:
    """Metrics (metrics.summarize) of predictions against ground truth matched by file name, as a JSON-able dict."""
    preds = _mask_files(Path(pred_dir), "prediction")
    gts = _mask_files(Path(gt_dir), "ground-truth")
    missing = [name for name in gts if _find_prediction(name, preds) is None]
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InputError(f"{len(missing)} of {len(gts)} ground-truth masks have no prediction in {pred_dir} "
                         f"({shown}).", "Predict every image first (covidseg predict), or evaluate on a ground-truth "
                         "folder that holds only the predicted images.")
    pred_masks, gt_masks = [], []
    for name, gt_path in gts.items():
        pred_path = _find_prediction(name, preds)
        g = read_gray(gt_path) > 127
        p = read_gray(pred_path) > 127
        if p.shape != g.shape:
            raise InputError(f"Prediction {pred_path.name} is {p.shape[1]}x{p.shape[0]} but its ground truth is "
                             f"{g.shape[1]}x{g.shape[0]}.", "Predict on the original images (masks keep their size).")
        pred_masks.append(p)
        gt_masks.append(g)
    result = summarize(pred_masks, gt_masks)
    extra = len(preds) - len(gts)
    if extra > 0:
        log.info("%d prediction(s) have no ground truth and were not scored", extra)
    result["unscored_predictions"] = max(extra, 0)
    # JSON has no NaN: undefined means (no infected image) become null
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}
