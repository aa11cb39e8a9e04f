"""One axial slice at a time: the CT in a window/level, and overlays (prediction, pseudo mask, attention heat map).

Mouse: wheel = next/previous slice, Ctrl+wheel = zoom, left-drag = pan (or paint with the brush/eraser),
right-drag = window (horizontal) and level (vertical), double-click = fit. Keys: arrows and PageUp/PageDown.

This module is over 400 lines because it is one widget whose image, overlays and mouse tools share the same
view state; the pure array helpers it needs live in covidseg_core.imaging.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QTransform
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QStackedWidget, QVBoxLayout, QWidget

from covidseg_core.imaging.resize import resize_nearest
from covidseg_core.imaging.windowing import BONE_WINDOW, LUNG_WINDOW, MEDIASTINUM_WINDOW, apply_window

WINDOW_PRESETS = {"lung": LUNG_WINDOW, "mediastinum": MEDIASTINUM_WINDOW, "bone": BONE_WINDOW}
INTENSITY_WINDOW = (255.0, 127.5)      # 8-bit images are already windowed: show them as they are

LAYERS = ("prediction", "pseudo", "attention")
DEFAULT_OPACITY = {"prediction": 0.45, "pseudo": 0.45, "attention": 0.5}
PAGE_STEP = 10

WELCOME_HTML = (
    "<h2>CovidSeg Assist</h2>"
    "<p>Label CT slices <b>infected</b> or <b>clean</b>, press <b>Train</b>, watch the attention maps sharpen "
    "epoch by epoch, correct the masks and export them as NIfTI.</p>"
    "<p><a style='color:#ffd166' href='demo'>Open the demo study</a> to see everything in one click,<br>"
    "or <a style='color:#4cc9f0' href='open'>open a NIfTI volume</a> &nbsp;·&nbsp; "
    "<a style='color:#4cc9f0' href='open_folder'>a DICOM or image folder</a> &nbsp;·&nbsp; "
    "<a style='color:#4cc9f0' href='project'>a project</a></p>"
    "<p style='color:#8a96a3'>Keys: I infected · C clean · U unlabel · N next unlabelled · ↑↓ PgUp PgDn slices · "
    "1 2 3 lung / mediastinum / bone window · right-drag window/level · Ctrl+wheel zoom</p>")

LayerSource = Callable[[int], "np.ndarray | None"]


def _heat_lut() -> np.ndarray:
    return pg.colormap.get("inferno").getLookupTable(0.0, 1.0, 256, alpha=False).astype(np.uint8)


def mask_rgba(mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """0/1 (or 0/255) mask -> RGBA, transparent where 0."""
    m = np.asarray(mask) > 0
    out = np.zeros((*m.shape, 4), dtype=np.uint8)
    out[m] = (*color, 255)
    return out


def pseudo_rgba(pseudo: np.ndarray) -> np.ndarray:
    """Pseudo mask (0 background, 255 infection, 127 ignore) -> RGBA: green infection, dim grey 'ignore'."""
    p = np.asarray(pseudo)
    out = np.zeros((*p.shape, 4), dtype=np.uint8)
    out[p >= 200] = (60, 220, 90, 255)
    out[(p > 60) & (p < 200)] = (150, 150, 170, 90)
    return out


def heat_rgba(heat: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Attention map in [0, 1] -> RGBA through a colour map; low attention is transparent."""
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    idx = (h * 255).astype(np.uint8)
    out = np.empty((*h.shape, 4), dtype=np.uint8)
    out[..., :3] = lut[idx]
    out[..., 3] = np.clip(h * 1.6 * 255, 0, 255).astype(np.uint8)
    return out


class _SliceViewBox(pg.ViewBox):
    """A ViewBox whose wheel steps slices, right-drag sets window/level, and left-drag paints when a tool is on."""

    def __init__(self, owner: "SliceView"):
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._owner = owner

    def wheelEvent(self, ev, axis=None):
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        ev.accept()
        delta = ev.delta()
        if delta:
            self._owner.step_slice(-1 if delta > 0 else 1)

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            self._owner._window_drag(ev)
        elif ev.button() == Qt.MouseButton.LeftButton and self._owner.tool:
            ev.accept()
            self._owner._paint_drag(ev)
        else:
            super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.MouseButton.LeftButton and self._owner.tool:
            ev.accept()
            self._owner._paint_at(ev.scenePos(), finish=True)
        elif ev.double():
            ev.accept()
            self.autoRange(padding=0.02)
        else:
            super().mouseClickEvent(ev)


class SliceView(QWidget):
    """CT slice viewer with overlays, window/level, slice navigation, and a brush/eraser for the predicted mask."""

    slice_changed = Signal(int)
    link_activated = Signal(str)             # a link of the welcome text: "open", "open_folder", "demo"
    hover_info = Signal(str)                 # "slice 12/32  x 40 y 71  -650 HU"
    window_changed = Signal(float, float)    # width, level
    stroke_finished = Signal(int, object)    # slice index, edited mask (y, x) uint8 0/1

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("sliceView")
        self._volume: np.ndarray | None = None
        self._is_hu = True
        self._spacing = (1.0, 1.0, 1.0)
        self._index = 0
        self._window = LUNG_WINDOW
        self._sources: dict[str, LayerSource | None] = {name: None for name in LAYERS}
        self._visible = {name: True for name in LAYERS}
        self._visible["pseudo"] = False
        self._lut = _heat_lut()
        self.tool: str | None = None          # None | "brush" | "eraser"
        self.brush_radius = 4
        self._edit: np.ndarray | None = None  # the mask being painted on the current slice
        self._wl_start: tuple[float, float] | None = None

        self._glw = pg.GraphicsView()
        self._vb = _SliceViewBox(self)
        self._glw.setCentralItem(self._vb)
        self._ct = pg.ImageItem()
        self._vb.addItem(self._ct)
        self._layers: dict[str, pg.ImageItem] = {}
        for z, name in enumerate(LAYERS):
            item = pg.ImageItem()
            item.setZValue(10 + z)
            item.setOpacity(DEFAULT_OPACITY[name])
            self._vb.addItem(item)
            self._layers[name] = item
        self._glw.scene().sigMouseMoved.connect(self._on_mouse_moved)

        self._slider = QSlider(Qt.Orientation.Horizontal)
        self._slider.setObjectName("sliceSlider")
        self._slider.setEnabled(False)
        self._slider.valueChanged.connect(self.set_slice)
        self._slider.setPageStep(PAGE_STEP)
        self._pos_label = QLabel("No study open")
        self._pos_label.setMinimumWidth(110)

        bottom = QHBoxLayout()
        bottom.addWidget(self._slider, 1)
        bottom.addWidget(self._pos_label)
        self._welcome = QLabel(WELCOME_HTML)
        self._welcome.setObjectName("welcome")
        self._welcome.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._welcome.setWordWrap(True)
        self._welcome.setStyleSheet("background: #101418; color: #c8d0da; font-size: 15px; padding: 40px;")
        self._welcome.linkActivated.connect(self.link_activated)
        self._stack = QStackedWidget()
        self._stack.addWidget(self._welcome)
        self._stack.addWidget(self._glw)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._stack, 1)
        layout.addLayout(bottom)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    # --- data ----------------------------------------------------------------------------------------------
    def set_volume(self, volume: np.ndarray | None, is_hu: bool = True,
                   spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), window: tuple[float, float] | None = None):
        self._volume = volume
        self._is_hu = is_hu
        self._spacing = tuple(float(s) for s in spacing)
        self._edit = None
        if volume is None:
            self._ct.clear()
            for item in self._layers.values():
                item.clear()
            self._slider.setEnabled(False)
            self._pos_label.setText("No study open")
            self._stack.setCurrentWidget(self._welcome)
            return
        self._stack.setCurrentWidget(self._glw)
        self._window = window or (LUNG_WINDOW if is_hu else INTENSITY_WINDOW)
        # non-square pixels: stretch y so the anatomy keeps its shape
        sx, sy = self._spacing[0], self._spacing[1]
        tr = QTransform.fromScale(1.0, sy / sx if sx > 0 else 1.0)
        for item in (self._ct, *self._layers.values()):
            item.setTransform(tr)
        self._slider.blockSignals(True)
        self._slider.setRange(0, volume.shape[0] - 1)
        self._slider.setEnabled(True)
        self._slider.blockSignals(False)
        self._index = -1
        self.set_slice(volume.shape[0] // 2)
        self._vb.autoRange(padding=0.02)

    @property
    def n_slices(self) -> int:
        return 0 if self._volume is None else int(self._volume.shape[0])

    @property
    def index(self) -> int:
        return self._index

    @property
    def is_hu(self) -> bool:
        return self._is_hu

    def set_layer_source(self, name: str, source: LayerSource | None) -> None:
        """`source(z)` returns the layer's 2D array for slice z (or None). Called again on every slice change."""
        self._sources[name] = source
        self._refresh_layer(name)

    def refresh_layers(self) -> None:
        for name in LAYERS:
            self._refresh_layer(name)

    def set_layer_visible(self, name: str, visible: bool) -> None:
        self._visible[name] = bool(visible)
        self._layers[name].setVisible(bool(visible))
        self._refresh_layer(name)

    def set_layer_opacity(self, name: str, opacity: float) -> None:
        self._layers[name].setOpacity(float(opacity))

    def layer_visible(self, name: str) -> bool:
        return self._visible[name]

    def layer_opacity(self, name: str) -> float:
        return float(self._layers[name].opacity())

    def layer_image(self, name: str) -> np.ndarray | None:
        """What the layer shows now (RGBA), for tests: None when empty or hidden."""
        item = self._layers[name]
        return item.image if item.isVisible() and item.image is not None else None

    # --- navigation ----------------------------------------------------------------------------------------
    def set_slice(self, index: int) -> None:
        if self._volume is None:
            return
        index = int(np.clip(index, 0, self._volume.shape[0] - 1))
        if index == self._index:
            return
        self._index = index
        self._edit = None
        lo, hi = self._levels()
        self._ct.setImage(self._volume[index], autoLevels=False, levels=(lo, hi))
        self.refresh_layers()
        self._slider.blockSignals(True)
        self._slider.setValue(index)
        self._slider.blockSignals(False)
        self._pos_label.setText(f"Slice {index + 1} / {self._volume.shape[0]}")
        self.slice_changed.emit(index)

    def step_slice(self, step: int) -> None:
        self.set_slice(self._index + step)

    def keyPressEvent(self, ev):
        steps = {Qt.Key.Key_Up: -1, Qt.Key.Key_Left: -1, Qt.Key.Key_Down: 1, Qt.Key.Key_Right: 1,
                 Qt.Key.Key_PageUp: -PAGE_STEP, Qt.Key.Key_PageDown: PAGE_STEP}
        if ev.key() in steps:
            self.step_slice(steps[ev.key()])
            ev.accept()
        elif ev.key() == Qt.Key.Key_Home:
            self.set_slice(0)
        elif ev.key() == Qt.Key.Key_End:
            self.set_slice(self.n_slices - 1)
        else:
            super().keyPressEvent(ev)

    def fit(self) -> None:
        self._vb.autoRange(padding=0.02)

    def zoom(self, factor: float) -> None:
        self._vb.scaleBy((1.0 / factor, 1.0 / factor))

    def view_range(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The part of the slice shown ((x0, x1), (y0, y1)) in pixels: the zoom and pan; None with no volume."""
        if self._volume is None:
            return None
        (x0, x1), (y0, y1) = self._vb.viewRange()
        return (float(x0), float(x1)), (float(y0), float(y1))

    def set_view_range(self, rng) -> None:
        """Show that part again (switching studies keeps the zoom)."""
        if self._volume is not None and rng is not None:
            self._vb.setRange(xRange=rng[0], yRange=rng[1], padding=0)

    # --- window / level ------------------------------------------------------------------------------------
    @property
    def window(self) -> tuple[float, float]:
        return self._window

    def gray(self, index: int) -> np.ndarray:
        """Slice `index` in [0, 1] through the current window (what the eye sees; thumbnails use it)."""
        return apply_window(self._volume[index], *self.window)

    def set_window(self, width: float, level: float) -> None:
        self._window = (max(float(width), 1.0), float(level))
        lo, hi = self._levels()
        if self._volume is not None:
            self._ct.setLevels((lo, hi))
        self.window_changed.emit(*self._window)

    def set_preset(self, name: str) -> None:
        self.set_window(*(WINDOW_PRESETS[name] if self._is_hu else INTENSITY_WINDOW))

    def _levels(self) -> tuple[float, float]:
        w, l = self._window
        return l - w / 2.0, l + w / 2.0

    def _window_drag(self, ev) -> None:
        if ev.isStart():
            self._wl_start = self._window
        if self._wl_start is None:
            return
        d = ev.screenPos() - ev.buttonDownScreenPos()
        scale = 4.0 if self._is_hu else 1.0          # HU span thousands, 8-bit images 255
        w0, l0 = self._wl_start
        self.set_window(w0 + d.x() * scale, l0 - d.y() * scale)
        if ev.isFinish():
            self._wl_start = None

    # --- hover readout -------------------------------------------------------------------------------------
    def pixel_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        if self._volume is None:
            return None
        p = self._ct.mapFromScene(scene_pos)
        x, y = int(np.floor(p.x())), int(np.floor(p.y()))
        h, w = self._volume.shape[1:]
        return (y, x) if 0 <= x < w and 0 <= y < h else None

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        yx = self.pixel_at(scene_pos)
        if yx is None:
            return
        y, x = yx
        v = float(self._volume[self._index, y, x])
        unit = "HU" if self._is_hu else "(intensity)"
        self.hover_info.emit(f"slice {self._index + 1}/{self.n_slices}   x {x}  y {y}   {v:.0f} {unit}")

    # --- layers --------------------------------------------------------------------------------------------
    def _refresh_layer(self, name: str) -> None:
        item = self._layers[name]
        src = self._sources.get(name)
        if self._volume is None or src is None or not self._visible[name]:
            item.clear()
            return
        if name == "prediction" and self._edit is not None:
            arr = self._edit
        else:
            arr = src(self._index)
        if arr is None:
            item.clear()
            return
        shape = self._volume.shape[1:]
        if name == "prediction":
            rgba = mask_rgba(resize_nearest(arr, shape), (235, 50, 50))
        elif name == "pseudo":
            rgba = pseudo_rgba(resize_nearest(arr, shape))
        else:
            rgba = heat_rgba(resize_nearest(arr, shape), self._lut)
        item.setImage(rgba, autoLevels=False, levels=(0, 255))

    # --- brush / eraser ------------------------------------------------------------------------------------
    def set_tool(self, tool: str | None) -> None:
        if tool not in (None, "brush", "eraser"):
            raise ValueError(tool)
        self.tool = tool
        self._glw.setCursor(Qt.CursorShape.CrossCursor if tool else Qt.CursorShape.ArrowCursor)

    def _start_edit(self) -> bool:
        if self._volume is None:
            return False
        if self._edit is None:
            src = self._sources.get("prediction")
            base = src(self._index) if src is not None else None
            shape = self._volume.shape[1:]
            self._edit = (np.zeros(shape, np.uint8) if base is None
                          else (resize_nearest(base, shape) > 0).astype(np.uint8))
        return True

    def paint(self, y: int, x: int, radius: int | None = None, erase: bool | None = None,
              refresh: bool = True) -> None:
        """Paint (or erase) a disc on the current slice's editable mask. Public so tests can paint exactly."""
        if not self._start_edit():
            return
        r = self.brush_radius if radius is None else radius
        erase = (self.tool == "eraser") if erase is None else erase
        h, w = self._edit.shape
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, h), max(x - r, 0), min(x + r + 1, w)
        if y0 >= y1 or x0 >= x1:
            return
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        self._edit[y0:y1, x0:x1][disc] = 0 if erase else 1
        if refresh:
            self._refresh_layer("prediction")

    def finish_stroke(self) -> None:
        self._last_paint = None
        if self._edit is not None:
            self.stroke_finished.emit(self._index, self._edit.copy())

    def _paint_at(self, scene_pos: QPointF, finish: bool = False) -> None:
        """Paint at the mouse, and along the segment from the previous point (mouse moves arrive sparsely)."""
        yx = self.pixel_at(scene_pos)
        if yx is not None:
            last = getattr(self, "_last_paint", None)
            if last is None:
                self.paint(*yx)
            else:
                r = self.brush_radius
                n = max(1, int(np.ceil(np.hypot(yx[0] - last[0], yx[1] - last[1]) / max(r / 2.0, 0.5))))
                for k in range(1, n + 1):
                    self.paint(round(last[0] + (yx[0] - last[0]) * k / n), round(last[1] + (yx[1] - last[1]) * k / n),
                               refresh=False)
                self._refresh_layer("prediction")
            self._last_paint = yx
        if finish:
            self.finish_stroke()

    def _paint_drag(self, ev) -> None:
        if ev.isStart():
            self._last_paint = self.pixel_at(ev.buttonDownScenePos())
            if self._last_paint is not None:
                self.paint(*self._last_paint)
        self._paint_at(ev.scenePos(), finish=ev.isFinish())

    def discard_edit(self) -> None:
        self._edit = None
        self._refresh_layer("prediction")
