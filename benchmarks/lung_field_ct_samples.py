"""The learned lung field on real chest CT outside zenodo-dev (../shared/data/ct-samples), and its picture.

The volumes are read with the project's readers (covidseg_core.io.loader.open_study) and turned into [0, 1]
slices by covidseg_core.imaging.windowing.to_unit_range, exactly as the pipeline does (HU through the lung window).
There are no lung masks for them, so the check is geometric, from the HU values themselves:
- inside body: share of the field's pixels inside the body (the convex hull of the largest piece of tissue
  above -500 HU, slice by slice; "cropped" volumes, cut inside the body, are body throughout, so this column
  says nothing for them);
- dark covered: share of the air-filled pixels inside the body (below -400 HU: aerated lung, but also the
  trachea, the main bronchi and stomach/bowel gas) that the field covers.
Both for the network and for the threshold method. With --figure, a picture of several slices (zenodo whole and
half slice with the expert lung outline, HU NIfTI slices, 512x512 DICOM slices) with the fields outlined.

    .venv/bin/python benchmarks/lung_field_ct_samples.py --figure docs/lung_field.png
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from covidseg_core.atomic import atomic_write  # noqa: E402
from covidseg_core.io.loader import open_study  # noqa: E402
from covidseg_core.imaging.lung_model import load_lung_model, predict_lung_fields, threshold_lung_fields  # noqa: E402
from covidseg_core.imaging.windowing import to_unit_range  # noqa: E402

log = logging.getLogger("bench_lung_ct")

SHARED = REPO.parent / "shared" / "data"
CT = SHARED / "ct-samples"
VOLUMES = {   # name -> path under ct-samples
    "chest CTA (NIfTI)": "totalseg_ct/nifti/chest_cta_aorta_ct_cropped.nii.gz",
    "chest CTA pulmonary (NIfTI)": "totalseg_ct/nifti/chest_cta_pulmonary_ct_cropped.nii.gz",
    "upper abdomen (DICOM 512, JPEG 2000)": "totalseg_ct/dicom_series",
    "lung bases (DICOM 512, GE)": "dicom_dcmqi_ct3slice",
    "abdomen/pelvis (NIfTI, 3 mm)": "totalseg_ct/nifti/example_ct_sm.nii.gz",
}
BODY_HU = -500.0
DARK_HU = -400.0


def _largest_tissue(hu: np.ndarray) -> np.ndarray | None:
    tissue = ndi.binary_opening(hu > BODY_HU, iterations=3)     # thin bridges to the scanner table cut
    lab, n = ndi.label(tissue)
    return lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:])) if n else None


def cropped_inside_body(hu_volume: np.ndarray) -> bool:
    """A volume cropped inside the body (the cropped chest CTs): at its middle slice the tissue reaches three
    or four image sides."""
    tissue = _largest_tissue(hu_volume[len(hu_volume) // 2])
    return tissue is not None and sum(side.any() for side in (tissue[0], tissue[-1], tissue[:, 0],
                                                              tissue[:, -1])) >= 3


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The body of one HU slice: the convex hull of its largest piece of tissue (above -500 HU). The chest wall
    surrounds the lungs; outside air, the scanner table and the padding outside the field of view lie outside."""
    tissue = _largest_tissue(hu)
    if tissue is None:
        return np.zeros(hu.shape, bool)
    ys, xs = np.nonzero(tissue)
    hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
    body = np.zeros(hu.shape, np.uint8)
    cv2.fillConvexPoly(body, hull, 1)
    return body.astype(bool)


def check_volume(model, hu: np.ndarray, images01: np.ndarray) -> dict:
    cropped = cropped_inside_body(hu)
    out = {"slices": len(hu), "cropped": cropped}
    # a volume cropped inside the body has no outside to leave: the whole image is body
    body = np.ones(hu.shape, bool) if cropped else np.stack([body_mask(s) for s in hu])
    dark = body & (hu < DARK_HU)
    for name, fields in (("net", predict_lung_fields(model, images01)), ("thr", threshold_lung_fields(images01))):
        area = fields.sum()
        out[f"{name}_nonempty"] = int(fields.any(axis=(1, 2)).sum())
        out[f"{name}_inside_body"] = float((fields & body).sum() / area) if area else float("nan")
        out[f"{name}_dark_covered"] = float((fields & dark).sum() / max(dark.sum(), 1))
        out[f"{name}_field_dark"] = float((fields & dark).sum() / area) if area else float("nan")
        out[f"{name}_fields"] = fields
    return out


def _tile(image01: np.ndarray, outlines: list[tuple[np.ndarray, tuple[int, int, int]]], title: str,
          size: int = 256) -> np.ndarray:
    h, w = image01.shape
    scale = size / max(h, w)
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = cv2.cvtColor(cv2.resize((np.clip(image01, 0, 1) * 255).astype(np.uint8), shape,
                                  interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    for mask, color in outlines:
        m = cv2.resize(mask.astype(np.uint8), shape, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, color, 1)
    canvas = np.full((size + 20, size, 3), 255, np.uint8)
    canvas[20:20 + img.shape[0], :img.shape[1]] = img
    cv2.putText(canvas, title, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def figure(model, picks: list[tuple[str, np.ndarray, np.ndarray | None]], path: Path) -> None:
    """Row 1: the network's field (red); row 2: the threshold method's (blue); the expert lungs in green."""
    rows = []
    for method, color in (("network", (0, 0, 255)), ("threshold", (255, 0, 0))):
        tiles = []
        for title, img, gt in picks:
            field = (predict_lung_fields(model, img[None])[0] if method == "network"
                     else threshold_lung_fields(img[None])[0])
            outlines = ([(gt, (0, 200, 0))] if gt is not None else []) + [(field, color)]
            tiles.append(_tile(img, outlines, f"{method}: {title}"))
        rows.append(np.hstack([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=255) for t in tiles]))
    picture = np.vstack(rows)

    def write(tmp: Path) -> None:   # the temp name keeps the target's .png ending, which picks the format
        if not cv2.imwrite(str(tmp), picture):
            raise OSError(f"could not write {path}")
    atomic_write(path, write)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=None, help="lung-field model (default: the packaged one)")
    ap.add_argument("--figure", type=Path, default=None, help="write the picture here (PNG)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    model = load_lung_model(args.weights, "cpu")
    lines = ["| volume | slices | net: slices with a field | net: field inside body | net: dark-in-body covered "
             "| net: field that is air-dark | thr: slices with a field | thr: field inside body | "
             "thr: dark-in-body covered | thr: field that is air-dark |", "|" + "---|" * 10]
    picks = []
    for title, rel in VOLUMES.items():
        study = open_study(CT / rel)
        hu = study.array.astype(np.float32)
        images01 = to_unit_range(study.array, study.is_hu, study.meta.get("bits", 8))
        r = check_volume(model, hu, images01)
        lines.append(f"| {title}{' (cropped)' if r['cropped'] else ''} | {r['slices']} | " + " | ".join(
            f"{r[f'{m}_nonempty']} | {r[f'{m}_inside_body']:.3f} | {r[f'{m}_dark_covered']:.3f} | "
            f"{r[f'{m}_field_dark']:.3f}" for m in ("net", "thr")) + " |")
        if "pulmonary" in rel:
            picks.append((f"HU NIfTI z={len(hu) // 2}", images01[len(hu) // 2], None))
        if "aorta" in rel:
            picks.append((f"HU NIfTI z={len(hu) * 3 // 4}", images01[len(hu) * 3 // 4], None))
        if "dcmqi" in rel:
            picks.append(("DICOM 512 lung bases", images01[1], None))
        if "dicom_series" in rel:
            picks.append(("DICOM 512 upper abdomen", images01[0], None))
    command = ".venv/bin/python benchmarks/lung_field_ct_samples.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:]))
    print("\n".join([f"`{command}`", "", *lines, ""]))
    if args.figure is not None:
        z = SHARED / "zenodo-dev"

        def whole(sub, name):
            return np.hstack([cv2.imread(str(z / sub / f"{name}_{s}.png"), cv2.IMREAD_GRAYSCALE) for s in "LR"])
        name = "c04_0420" if (z / "images" / "c04_0420_L.png").is_file() else None
        if name is not None:
            img = whole("images", name).astype(np.float32) / 255.0
            gt = whole("lungs", name) > 127
            picks = [(f"zenodo {name} whole", img, gt), (f"zenodo {name}_R half", img[:, 128:].copy(), gt[:, 128:]),
                     *picks]
        figure(model, picks, args.figure)
        log.info("wrote %s", args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
