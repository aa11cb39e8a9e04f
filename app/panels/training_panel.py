"""Train / Cancel, a progress bar with stage, epoch and time left, the loss curves of both networks, and the runs
this project has made (retraining adds a run, it never replaces one)."""
from __future__ import annotations

import time

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QProgressBar, QSizePolicy, QSplitter, QToolButton,
                               QVBoxLayout, QWidget)

from covidseg_core.events import EpochReport, Progress

STAGE_NAMES = {"classifier": "Training the classifier", "cams": "Fusing attention maps",
               "pseudo": "Making pseudo masks", "segmenter": "Training the segmenter", "predict": "Predicting masks",
               "quantify": "Measuring volumes", "export": "Exporting", "load": "Reading the study",
               "plan": "Measuring the training speed"}
PROGRESS_PAINT_INTERVAL_S = 0.25
CURVE_COLORS = ["#4cc9f0", "#f72585", "#ffd166", "#80ed99", "#b8b8ff", "#ff9f1c"]


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"about {seconds} s left"
    return f"about {seconds // 60} min {seconds % 60:02d} s left"


class TrainingPanel(QWidget):
    def __init__(self, train_action: QAction, cancel_action: QAction, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("trainingPanel")
        self.train_button = QToolButton()
        self.train_button.setDefaultAction(train_action)
        self.train_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.train_button.setObjectName("trainButton")
        self.cancel_button = QToolButton()
        self.cancel_button.setDefaultAction(cancel_action)
        self.cancel_button.setObjectName("cancelButton")
        self.progress = QProgressBar()
        self.progress.setObjectName("jobProgress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        self.status = QLabel("Label some slices infected and clean, then press Train.")
        self.status.setObjectName("jobStatus")
        # one line of fixed height: a label that grows with its text would re-lay-out (and repaint) the whole
        # window on every progress event
        self.status.setFixedHeight(self.status.fontMetrics().height() + 4)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._last_progress_paint = 0.0

        self.plot = pg.PlotWidget(title="Loss per epoch")
        self.plot.setObjectName("lossPlot")
        self.plot.setLabel("bottom", "epoch")
        self.plot.addLegend(offset=(-10, 10))
        # no grid: translucent grid lines are drawn by the axes over the whole plot, the slowest part of a repaint
        self.plot.setMinimumHeight(150)
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._points: dict[str, tuple[list[float], list[float]]] = {}

        self.runs = QListWidget()
        self.runs.setObjectName("runList")
        self.runs.setToolTip("Runs of this project, newest last")

        top = QHBoxLayout()
        top.addWidget(self.train_button)
        top.addWidget(self.cancel_button)
        top.addWidget(self.progress, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plot)
        runs_box = QWidget()
        rl = QVBoxLayout(runs_box)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(QLabel("Runs"))
        rl.addWidget(self.runs)
        split.addWidget(runs_box)
        split.setSizes([500, 200])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.status)
        lay.addWidget(split, 1)

    # --- job life cycle ------------------------------------------------------------------------------------
    def job_started(self, name: str) -> None:
        self.progress.setRange(0, 0)       # busy until the first Progress says how much there is
        self.progress.setFormat(name)
        self._set_status(f"{name}…")

    def clear_curves(self) -> None:
        self.plot.clear()
        self._curves.clear()
        self._points.clear()

    def show_progress(self, ev: Progress) -> None:
        now = time.monotonic()
        if now - self._last_progress_paint < PROGRESS_PAINT_INTERVAL_S and ev.done < ev.total:
            return                       # a person reads a few updates per second; each one costs a repaint
        self._last_progress_paint = now
        stage = STAGE_NAMES.get(ev.stage, ev.stage)
        if ev.total and ev.total > 0:
            if self.progress.maximum() != int(ev.total):
                self.progress.setRange(0, int(ev.total))
            self.progress.setValue(int(min(ev.done, ev.total)))
            fmt = f"{stage}: %v / %m"
            if self.progress.format() != fmt:
                self.progress.setFormat(fmt)
        else:
            self.progress.setRange(0, 0)
            self.progress.setFormat(stage)
        parts = [stage, ev.message, format_eta(ev.eta_s)]
        self._set_status(" — ".join(p for p in parts if p))

    def _set_status(self, text: str) -> None:
        if self.status.text() != text:
            self.status.setText(text)
            self.status.setToolTip(text)

    def show_epoch(self, ev: EpochReport) -> None:
        for key, value in ev.losses.items():
            if not isinstance(value, (int, float)):
                continue
            name = f"{ev.stage} {key}"
            xs, ys = self._points.setdefault(name, ([], []))
            xs.append(ev.epoch)
            ys.append(float(value))
            if name not in self._curves:
                color = CURVE_COLORS[len(self._curves) % len(CURVE_COLORS)]
                style = Qt.PenStyle.SolidLine if ev.stage == "classifier" else Qt.PenStyle.DashLine
                # no point symbols: a scatter item per curve doubles the repaint cost on the GUI thread
                self._curves[name] = self.plot.plot(name=name, pen=pg.mkPen(color, width=2, style=style))
            self._curves[name].setData(xs, ys)
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in ev.metrics.items() if isinstance(v, (int, float)))
        stage = STAGE_NAMES.get(ev.stage, ev.stage)
        self._set_status(f"{stage}: epoch {ev.epoch}/{ev.epochs} done in {ev.seconds:.1f} s"
                            + (f" — {metrics}" if metrics else ""))

    def curve_names(self) -> list[str]:
        return list(self._curves)

    def job_ended(self, text: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if text.startswith("Done") else 0)
        self.progress.setFormat(text.split(":")[0])
        self._set_status(text)

    def set_runs(self, runs: list[dict]) -> None:
        self.runs.clear()
        for r in runs:
            s = r.get("summary") or {}
            name = str(r.get("relpath") or r.get("path", "")).replace("\\", "/").split("/")[-1]
            bits = [s.get("status", "")]
            for key in ("dice_mean", "val_dice", "fusion"):
                if key in s:
                    v = s[key]
                    bits.append(f"{key} {v:.3f}" if isinstance(v, float) else f"{key} {v}")
            self.runs.addItem(f"{name}  {' '.join(b for b in bits if b)}")
