"""`covidseg-assist --smoke-test OUTDIR`: proves that a bundle works on a machine without Python.

Runs headless (Qt offscreen) and checks the things a frozen app loses first: the Qt platform plugins, the GUI
opening the demo study, DICOM JPEG 2000 decoding through the pylibjpeg plugins (found via package metadata entry
points), SimpleITK's NIfTI IO, and torch training and prediction (`covidseg train --fast`, `covidseg predict`).
Everything it writes stays in OUTDIR; the result is OUTDIR/smoke-report.json, and the exit status is 0 only when
every check passed.

Start-up time is measured from COVIDSEG_LAUNCH_T0 (epoch seconds, set by the caller just before it starts the
executable) to the main window being shown; without it, from the moment this module was imported.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

_IMPORTED_AT = time.time()
log = logging.getLogger("covidseg.smoke")

REPORT_NAME = "smoke-report.json"


class SmokeFailure(Exception):
    """A check of the bundle failed; the message says which and why."""


class _Report:
    """Collects timings and facts, and is written out whatever happens (also from the watchdog)."""

    def __init__(self, out: Path, t0: float, t0_source: str):
        self.out = out
        self.t0 = t0
        self.data: dict = {"ok": False, "step": "start", "launch_clock": t0_source, "timings_s": {},
                           "frozen": bool(getattr(sys, "frozen", False)), "executable": sys.executable}
        self._lock = threading.Lock()

    def step(self, name: str) -> None:
        log.info("smoke test: %s", name)
        self.data["step"] = name

    def timing(self, name: str, seconds: float) -> None:
        self.data["timings_s"][name] = round(seconds, 3)

    def write(self) -> Path:
        with self._lock:
            path = self.out / REPORT_NAME
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=str), encoding="utf-8")
            os.replace(tmp, path)
            return path


def _launch_time() -> tuple[float, str]:
    raw = os.environ.get("COVIDSEG_LAUNCH_T0", "")
    try:
        t0 = float(raw)
    except ValueError:
        return _IMPORTED_AT, "module import (COVIDSEG_LAUNCH_T0 not set)"
    if not 0 < _IMPORTED_AT - t0 < 3600:       # a stale or foreign value: do not report nonsense
        return _IMPORTED_AT, f"module import (COVIDSEG_LAUNCH_T0={raw!r} ignored)"
    return t0, "COVIDSEG_LAUNCH_T0 (set by the caller before launch)"


def _start_watchdog(report: _Report, timeout_s: float) -> threading.Timer:
    """A modal error box or a hung job would block forever offscreen: give up, say where, exit non-zero."""

    def fire() -> None:
        report.data["error"] = f"timed out after {timeout_s:.0f} s in step {report.data['step']!r}"
        log.error("smoke test: %s", report.data["error"])
        report.write()
        logging.shutdown()
        os._exit(4)

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    return timer


# --- GUI -----------------------------------------------------------------------------------------------------

def _spin_until(app, predicate, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise SmokeFailure(f"{what}: not done after {timeout_s:.0f} s")
        app.processEvents()
        time.sleep(0.01)


def check_gui(out: Path, report: _Report) -> Path:
    """Main window up, demo study opened with its labels, window closed. Returns the demo study folder."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.application import configure_qt_app
    from app.main_window import MainWindow
    from app.prefs import Prefs

    report.step("gui: main window")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    configure_qt_app(app)
    # the user's own preferences and data folders are left alone: everything goes under OUTDIR
    prefs = Prefs(QSettings(str(out / "prefs.ini"), QSettings.Format.IniFormat))
    window = MainWindow(prefs=prefs)
    window.ask_questions = False
    probing = window.device_label.text()
    failures: list[str] = []
    window.jobs.failed.connect(lambda name, exc: failures.append(f"{name}: {exc}"))
    window.show()
    _spin_until(app, window.isVisible, 60, "showing the main window")
    app.processEvents()
    shown = time.time()
    report.timing("startup_to_window", shown - report.t0)
    report.data["platform_plugin"] = app.platformName()

    report.step("gui: open the demo study")
    from covidseg_core.demo import write_demo

    demo = out / "demo" / "study"
    info = write_demo(demo)
    window.open_path(demo / "volume" / "ct.nii.gz", project_folder=out / "demo" / "project")
    _spin_until(app, lambda: failures or (window.session.has_study and not window.jobs.busy), 300,
                "opening the demo study in the main window")
    if failures:
        raise SmokeFailure(f"the main window could not open the demo study: {failures[0]}")
    study = window.session.study
    counts = window.session.counts()
    if study.shape[0] != info["slices"] or counts.get("infected", 0) != info["infected"]:
        raise SmokeFailure(f"the demo opened wrongly: shape {study.shape}, labels {counts}, expected {info}")
    report.timing("open_demo_study", time.time() - shown)
    # the status bar's device probe imports torch on the thread pool: let it finish before anything else imports
    # torch (two threads importing torch at once break it) and before the window goes
    _spin_until(app, lambda: window.device_label.text() != probing, 300, "the device probe in the status bar")
    if not window.device_label.text().startswith("Device:"):
        raise SmokeFailure(f"the device probe failed: {window.device_label.text()}")
    report.data["gui"] = {"study_shape": list(study.shape), "labels": counts, "title": window.windowTitle(),
                          "device_label": window.device_label.text()}

    report.step("gui: close")
    window.close()
    app.processEvents()
    window.deleteLater()
    app.processEvents()
    return demo


# --- DICOM JPEG 2000 ------------------------------------------------------------------------------------------

def _write_j2k_series(folder: Path, volume_hu, spacing_mm=(0.8, 0.8, 2.0)) -> None:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for z, hu in enumerate(volume_hu):
        stored = (hu + 1024).astype(np.uint16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Smoke^Test", "SMOKE"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber, ds.InstanceNumber = 1, z + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(z * spacing_mm[2])]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [spacing_mm[1], spacing_mm[0]]
        ds.SliceThickness = spacing_mm[2]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = stored.tobytes()
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(folder / f"slice_{z:03d}.dcm", enforce_file_format=True)


def check_dicom_jpeg2000(out: Path, report: _Report) -> None:
    """JPEG 2000 lossless CT (as scanners write it) must decode through pylibjpeg, and load as the right HU."""
    import numpy as np
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    from covidseg_core.io.loader import open_study

    report.step("dicom: JPEG 2000 series")
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 1500, size=(4, 48, 40)).astype(np.int16)
    folder = out / "dicom_j2k"
    _write_j2k_series(folder, hu)
    first = sorted(folder.glob("*.dcm"))[0]
    if dcmread(first).file_meta.TransferSyntaxUID.name != "JPEG 2000 Image Compression (Lossless Only)":
        raise SmokeFailure("the test series was not written as JPEG 2000")
    # the plugin itself, not Pillow's fallback: pylibjpeg finds openjpeg through its entry points
    decoded = pixel_array(first, decoding_plugin="pylibjpeg")
    if not np.array_equal(decoded.astype(np.int32) - 1024, hu[0]):
        raise SmokeFailure("pylibjpeg decoded the JPEG 2000 slice wrongly")
    study = open_study(folder)
    if study.array.shape != hu.shape or not np.allclose(study.array, hu):
        raise SmokeFailure(f"the DICOM reader returned {study.array.shape} with other values than written")
    report.data["dicom_jpeg2000"] = {"slices": int(hu.shape[0]), "is_hu": bool(study.is_hu)}


# --- CLI: train --fast, predict, check the NIfTI -------------------------------------------------------------------

def _cli(args: list[str]) -> None:
    from covidseg_core.cli import build_parser, main as cli_main

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    command = next(a for a in args if not a.startswith("-"))
    if command not in sub.choices:
        raise SmokeFailure(f"this build's command line has no `{command}` command (has: {sorted(sub.choices)})")
    rc = cli_main(args)
    if rc != 0:
        raise SmokeFailure(f"`covidseg {' '.join(args)}` exited {rc}")


def check_nifti_prediction(pred_dir: Path, volume: Path, truth: Path | None) -> dict:
    """The predicted mask is a NIfTI in the scan's geometry with 0/1 (or 0/255) values."""
    import numpy as np
    import SimpleITK as sitk

    found = sorted(p for p in pred_dir.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
    if not found:
        raise SmokeFailure(f"predict wrote no NIfTI file in {pred_dir}")
    mask_img, ref = sitk.ReadImage(str(found[0])), sitk.ReadImage(str(volume))
    if mask_img.GetSize() != ref.GetSize():
        raise SmokeFailure(f"mask size {mask_img.GetSize()} != scan size {ref.GetSize()}")
    for name in ("GetSpacing", "GetOrigin", "GetDirection"):
        a, b = getattr(mask_img, name)(), getattr(ref, name)()
        if not np.allclose(a, b, atol=1e-4):
            raise SmokeFailure(f"mask geometry differs from the scan: {name[3:]} {a} != {b}")
    mask = sitk.GetArrayFromImage(mask_img)
    values = set(np.unique(mask).tolist())
    if not values <= {0, 1} and not values <= {0, 255}:
        raise SmokeFailure(f"mask values are not a binary mask: {sorted(values)[:10]}")
    result = {"file": found[0].name, "shape": list(mask.shape), "infected_fraction": float((mask > 0).mean())}
    if truth is not None and truth.is_file():
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(truth))) > 0
        m = mask > 0
        denom = int(m.sum() + gt.sum())
        result["dice_vs_demo_truth"] = float(2 * (m & gt).sum() / denom) if denom else 1.0
    return result


def check_train_predict(demo: Path, out: Path, report: _Report) -> None:
    report.step("cli: train --fast")
    run = out / "run"
    t = time.time()
    _cli(["--quiet", "train", "--data", str(demo), "--out", str(run), "--fast"])
    report.timing("train_fast", time.time() - t)

    report.step("cli: predict the demo volume")
    pred = out / "pred"
    volume = demo / "volume" / "ct.nii.gz"
    t = time.time()
    _cli(["--quiet", "predict", "--run", str(run), "--input", str(volume), "--out", str(pred)])
    report.timing("predict", time.time() - t)
    report.data["prediction"] = check_nifti_prediction(pred, volume, demo / "volume" / "infection.nii.gz")
    config = run / "config.json"
    if config.is_file():
        report.data["run_environment"] = json.loads(config.read_text(encoding="utf-8")).get("environment")


def _versions() -> dict:
    import torch

    from covidseg_core.runs import environment_info

    return environment_info("cuda" if torch.cuda.is_available() else "cpu")


# --- main ------------------------------------------------------------------------------------------------------

def run_smoke_test(out: Path, timeout_s: float = 1800.0, skip_training: bool = False) -> dict:
    """All checks in order; raises SmokeFailure on the first that fails. Returns the report's data."""
    t0, source = _launch_time()
    out.mkdir(parents=True, exist_ok=True)
    report = _Report(out, t0, source)
    watchdog = _start_watchdog(report, timeout_s)
    try:
        demo = check_gui(out, report)
        check_dicom_jpeg2000(out, report)
        report.data["versions"] = _versions()
        if skip_training:
            report.data["training"] = "skipped (--skip-training)"
        else:
            check_train_predict(demo, out, report)
        report.step("done")
        report.data["ok"] = True
    except SmokeFailure as exc:
        report.data["error"] = str(exc)
        raise
    except Exception as exc:
        report.data["error"] = f"unexpected {type(exc).__name__}: {exc}"
        log.exception("smoke test: unexpected error")
        raise SmokeFailure(report.data["error"]) from exc
    finally:
        watchdog.cancel()
        report.timing("total", time.time() - t0)
        report.write()
    return report.data


def _setup_logging(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(out / "smoke.log", encoding="utf-8")]
    if sys.stderr is not None:           # a windowed Windows build has no console at all
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="covidseg-assist --smoke-test", description="headless self-check of the app")
    p.add_argument("out", type=Path, help="folder for everything the test writes (and smoke-report.json)")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds (exit 4)")
    p.add_argument("--skip-training", action="store_true", help="GUI and DICOM checks only")
    args = p.parse_args(argv)
    _setup_logging(args.out)
    try:
        data = run_smoke_test(args.out, args.timeout, args.skip_training)
    except SmokeFailure as exc:
        log.error("smoke test FAILED: %s (report: %s)", exc, args.out / REPORT_NAME)
        return 1
    log.info("smoke test passed in %.1f s (window after %.1f s); report: %s", data["timings_s"]["total"],
             data["timings_s"]["startup_to_window"], args.out / REPORT_NAME)
    return 0
