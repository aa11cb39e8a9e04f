"""Render resources/icon.svg into the icon files each platform's bundle needs: PNG (Linux), ICO (Windows), ICNS (macOS).

    python packaging/make_icons.py OUTDIR      -> OUTDIR/covidseg-assist.png, .ico, .icns (+ PNGs per size)

Qt's SVG renderer draws each size (offscreen, no display needed); Pillow packs the ICO and ICNS containers.
Run at build time so the repository keeps one source of truth, the SVG.
"""
from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SVG = ROOT / "resources" / "icon.svg"
NAME = "covidseg-assist"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)

log = logging.getLogger("covidseg.icons")


def render_png(svg: Path, size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not an SVG that Qt can draw")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    return bytes(data.data())


def make_icons(out: Path, svg: Path = SVG) -> dict[str, Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image
    from PySide6.QtWidgets import QApplication

    # Qt draws with an application object alive; a widgets one, so a later window in the same process still works
    app = QApplication.instance() or QApplication([sys.argv[0]])  # noqa: F841
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for size in PNG_SIZES:
        png = render_png(svg, size)
        (out / f"{NAME}-{size}.png").write_bytes(png)
        images[size] = Image.open(io.BytesIO(png)).convert("RGBA")
    paths = {"png": out / f"{NAME}.png", "ico": out / f"{NAME}.ico", "icns": out / f"{NAME}.icns"}
    images[256].save(paths["png"])
    images[256].save(paths["ico"], sizes=[(s, s) for s in ICO_SIZES])
    images[512].save(paths["icns"])          # Pillow writes the smaller ICNS members from the large one
    return paths


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if len(argv) != 1:
        log.error("usage: make_icons.py OUTDIR")
        return 2
    for kind, path in make_icons(Path(argv[0])).items():
        log.info("%s: %s (%d bytes)", kind, path, path.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
