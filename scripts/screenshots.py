"""Save screenshots of the app on the demo study to docs/screenshots/ (offscreen; no display needed).

    python scripts/screenshots.py [--out docs/screenshots] [--quick]

Shots: empty start, labelled study, training in progress with the attention strip, prediction overlay, export
dialog, the study list of a project of two studies, and a suggested slice (S). Exits 1 if any captured image is
blank (a window that did not paint).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ("01-empty-start", "02-labelled-study", "03-training-attention", "04-prediction-overlay",
         "05-export-dialog", "06-study-list", "07-suggestion")
QUICK_DEMO = dict(n_slices=12, size=96)
FULL: dict = {}          # the app's defaults (the core's fast preset): about a minute on the demo on a laptop CPU
QUICK = dict(cls_epochs=4, seg_epochs=2, size=32, base=8, batch_size=4, device="cpu", seed=0)

log = logging.getLogger("screenshots")


def image_stats(path: Path) -> tuple[float, int]:
    """(pixel standard deviation, number of distinct grey levels) of a PNG: ~0 / 1 means blank."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32)
    return float(a.std()), int(len(np.unique(a)))


def is_blank(path: Path) -> bool:
    std, levels = image_stats(path)
    return std < 2.0 or levels < 8


def _pump(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def _wait(app, predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.01)


def capture(out: Path, settings: dict, work: Path | None = None, demo: dict | None = None) -> list[Path]:
    """Drive a MainWindow through the demo and save the shots in `out`. Returns the PNG paths.
    `demo`: options of covidseg_core.demo.write_demo (a shorter study for a quick run)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(work or tempfile.mkdtemp(prefix="covidseg-shots-"))
    os.environ.setdefault("XDG_DATA_HOME", str(work / "data"))      # the demo goes to a throw-away data folder
    os.environ.setdefault("XDG_CONFIG_HOME", str(work / "config"))
    sys.path.insert(0, str(ROOT))
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.application import configure_qt_app
    from app.main_window import MainWindow
    from app.prefs import Prefs

    app = QApplication.instance() or QApplication([sys.argv[0]])
    configure_qt_app(app)
    out.mkdir(parents=True, exist_ok=True)
    w = MainWindow(prefs=Prefs(QSettings(str(work / "prefs.ini"), QSettings.Format.IniFormat)))
    w.ask_questions = False
    w.resize(1500, 950)
    w.show()
    paths = []

    def shot(name: str, widget=None) -> None:
        _pump(app, 0.3)
        p = out / f"{name}.png"
        (widget or w).grab().save(str(p))
        paths.append(p)
        log.info("saved %s", p)

    try:
        _wait(app, lambda: "…" not in w.device_label.text(), 120, "the device probe")
        shot(SHOTS[0])

        # a labelled study: the demo volume with its labels, on an infected slice
        project = work / "demo-project"
        from covidseg_core.demo import write_demo
        info = write_demo(work / "demo", **(demo or {}))
        w.open_path(Path(info["volume"]), project_folder=project)
        _wait(app, lambda: w.session.has_study and not w.jobs.busy, 120, "the demo study")
        s = w.session
        labels = s.label_list()
        infected = [i for i, lab in enumerate(labels) if lab == "infected"]
        s.set_label(2, None)                     # one unlabelled slice shows in the strip
        w.view.set_slice(infected[len(infected) // 2])
        shot(SHOTS[1])

        # training in progress, on a slice the classifier reports maps for
        if settings:
            s.project.update_settings(**settings)
        w.actions_by_name["train"].trigger()
        need = min(3, w.training_settings()["cls_epochs"] or 3)     # None: the budget decides (the default)
        _wait(app, lambda: any(len(h.cams) >= need for h in s.attention.values()), 900, "classifier epochs")
        reported = max(s.attention, key=lambda sid: len(s.attention[sid].cams))
        w.view.set_slice(s.study.slice_index(reported))
        shot(SHOTS[2])
        _wait(app, lambda: not w.jobs.busy, 1800, "the end of training")
        _wait(app, lambda: s.quantification is not None, 120, "the volumes")

        # the prediction on the slice with the most predicted infection, with the fused attention
        z = int(s.prediction.reshape(s.prediction.shape[0], -1).sum(1).argmax())
        w.view.set_slice(z)
        w.overlay_panel.checks["attention"].setChecked(True)
        w.overlay_panel.checks["prediction"].setChecked(True)
        w.view.zoom(1.3)
        shot(SHOTS[3])

        dlg = w.show_export_dialog()
        dlg.path.setText(str(work / "export" / "demo_infection.nii.gz"))
        dlg.export_button.click()
        _wait(app, lambda: not w.jobs.busy and "Written" in dlg.result.text(), 300, "the export")
        shot(SHOTS[4], dlg)
        dlg.close()

        # a second patient in the project, partly labelled: the study list with each study's counts and status
        second = Path(write_demo(work / "demo2", seed=1, **(demo or {}))["volume"])
        second = second.rename(second.with_name("patient_2.nii.gz"))       # its labels.csv stays beside it
        w.controller.add_study(second)
        _wait(app, lambda: len(s.project.sources) == 2 and s.source_id == s.project.sources[1]["id"]
              and not w.jobs.busy, 300, "the second study")
        s.project.set_labels(s.source_id, {sid: None for i, sid in enumerate(s.study.slice_ids) if i % 4})
        shot(SHOTS[5])

        # S: the slice most worth labelling next (scored by the run's classifier), marked blue on the label strip
        w.actions_by_name["suggest"].trigger()
        _wait(app, lambda: s.suggestions and not w.jobs.busy, 600, "the suggestions")
        shot(SHOTS[6])
    finally:
        if w.jobs.busy:
            w.jobs.cancel()
            w.jobs.wait(30000)
        w.close()
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    p.add_argument("--quick", action="store_true", help="tiny training settings (seconds instead of minutes)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = capture(args.out, QUICK if args.quick else FULL, demo=QUICK_DEMO if args.quick else None)
    blank = [p for p in paths if is_blank(p)]
    for p in paths:
        std, levels = image_stats(p)
        log.info("%s: std %.1f, %d grey levels%s", p.name, std, levels, "  BLANK" if p in blank else "")
    return 1 if blank else 0


if __name__ == "__main__":
    sys.exit(main())
