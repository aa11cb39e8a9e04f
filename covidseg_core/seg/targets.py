"""Stage-2 supervision: each slice's training target, and the validation split.

Per slice: the user's pixel mask (`--pixel-labels`) when there is one, else the stage-1 pseudo mask (0
background, 1 infection, 255 ignore -> no loss). Ground-truth masks of the data set (`masks/`) are for reporting
only and never reach a target.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..constants import IGNORE
from ..errors import InputError, RunError
from ..io.images import read_gray
from ..runs import slice_png_name

log = logging.getLogger(__name__)


def split_validation(groups: list[str], candidates: np.ndarray, fraction: float, seed: int,
                     has_foreground: np.ndarray | None = None, always_train: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices out of `candidates`. By volume when there are several (neighbouring slices of one
    patient are near-duplicates), else by blocks of neighbouring slices (every fifth block validates; of the
    five possible block sets, the one holding most slices whose training target has foreground, so that the
    validation loss can tell a net that finds lesions from one that predicts nothing)."""
    candidates = np.asarray(candidates, dtype=int)
    if len(candidates) < 5 or fraction <= 0:
        return candidates, np.zeros(0, dtype=int)
    cand_groups = np.array([groups[i] for i in candidates])
    unique = sorted(set(cand_groups.tolist()))
    if len(unique) > 1:
        rng = np.random.default_rng(seed)
        order = [unique[i] for i in rng.permutation(len(unique))]
        val_groups: list[str] = []
        n_val = 0
        for g in order[:-1]:                                  # at least one volume stays for training
            if n_val >= fraction * len(candidates):
                break
            val_groups.append(g)
            n_val += int((cand_groups == g).sum())
        is_val = np.isin(cand_groups, val_groups)
    else:
        block = max(1, int(round(len(candidates) * fraction / 2)))
        period = max(2, int(round(1 / fraction)))
        blocks = (np.arange(len(candidates)) // block) % period
        offsets = [(seed + k) % period for k in range(period)]
        if has_foreground is not None:
            fg = np.asarray(has_foreground, dtype=bool)[candidates]
            offsets.sort(key=lambda o: -int(fg[blocks == o].sum()))    # stable: ties keep the seed's order
        is_val = blocks == offsets[0]
    if always_train is not None:      # the user's pixel masks are too precious to only validate
        is_val &= ~np.asarray(always_train, dtype=bool)[candidates]
    return candidates[~is_val], candidates[is_val]


def build_targets(slices, pseudo_dir: Path | None, pixel_dir: Path | None
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-slice training targets (n, H, W) uint8 0/1/255, which slices have one, and where each came from
    ("pixel", "pseudo" or "")."""
    n, h, w = slices.images.shape
    targets = np.full((n, h, w), IGNORE, dtype=np.uint8)
    has = np.zeros(n, dtype=bool)
    source = [""] * n
    pixel_files: dict[str, Path] = {}
    n_contradicting = 0
    if pixel_dir is not None:
        if not pixel_dir.is_dir():
            raise InputError(f"--pixel-labels folder {pixel_dir} does not exist.", "Check the path.")
        pixel_files = {p.name: p for p in pixel_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
        if not pixel_files:
            raise InputError(f"--pixel-labels folder {pixel_dir} holds no PNG masks.",
                             "Put PNG masks (0/255) named as their images there.")
        by_stem = {Path(k).stem: v for k, v in pixel_files.items()}
        unknown = set(pixel_files) - {slice_png_name(i) for i in slices.ids}
        if unknown:
            shown = ", ".join(sorted(unknown)[:3])
            raise InputError(f"{len(unknown)} mask(s) in {pixel_dir} match no image of the data set ({shown}).",
                             "Name each pixel mask exactly as its image.")
    for i, sid in enumerate(slices.ids):
        pix = None
        if pixel_files:
            pix = pixel_files.get(Path(sid).name) or by_stem.get(Path(sid).stem)
        if pix is not None:
            m = read_gray(pix)
            if m.shape != (h, w):
                raise InputError(f"Pixel mask {pix} is {m.shape[1]}x{m.shape[0]}, its image {w}x{h}.",
                                 "Masks must have the size of their images.")
            targets[i] = (m > 127).astype(np.uint8)
            has[i], source[i] = True, "pixel"
            continue
        if pseudo_dir is None:
            continue
        p = pseudo_dir / slice_png_name(sid)
        if p.is_file():
            m = read_gray(p)
            if m.shape != (h, w):
                raise RunError(f"Pseudo mask {p} does not have the size of its slice.",
                               "The run folder is inconsistent; train again into a new folder.")
            t = np.full((h, w), IGNORE, dtype=np.uint8)
            t[m == 0] = 0
            t[m >= 192] = 1            # 255 = infection; 127 (ignore) stays IGNORE
            if slices.labels[i] == "infected" and not (t == 1).any():
                # the label says there is infection somewhere: an all-background target would teach the opposite
                # (stage 1 found no lesion, e.g. no lung field on this slice), so the slice gives no supervision
                n_contradicting += 1
                continue
            targets[i] = t
            has[i], source[i] = True, "pseudo"
    if n_contradicting:
        log.warning("%d infected slice(s) got a pseudo mask without infection and are left out of stage 2",
                    n_contradicting)
    return targets, has, source
