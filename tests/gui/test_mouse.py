"""Mouse on the slice view: brush strokes by dragging, window/level by right-drag, slices by the wheel."""
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest


def view_point(v, x, y):
    """Widget coordinates (of the graphics view's viewport) of image pixel (x, y)."""
    scene = v._ct.mapToScene(QPointF(x + 0.5, y + 0.5))
    p = v._glw.mapFromScene(scene)
    return QPoint(int(p.x()), int(p.y()))


def drag(qtbot, widget, button, start, end, steps=6):
    QTest.mousePress(widget, button, Qt.KeyboardModifier.NoModifier, start)
    for k in range(1, steps + 1):
        p = start + (end - start) * k / steps
        QTest.mouseMove(widget, p)
        qtbot.wait(5)
    QTest.mouseRelease(widget, button, Qt.KeyboardModifier.NoModifier, end)
    qtbot.wait(20)


def test_brush_drag_paints_and_saves(qtbot, demo_window):
    w = demo_window
    v = w.view
    z = 4
    v.set_slice(z)
    qtbot.wait(50)
    w.actions_by_name["brush"].trigger()
    vp = v._glw.viewport()
    drag(qtbot, vp, Qt.MouseButton.LeftButton, view_point(v, 30, 60), view_point(v, 60, 60))
    corr = w.session.correction(z)
    assert corr is not None, "the stroke was not saved"
    assert corr[60, 45] == 1 and corr[10, 10] == 0
    assert corr[60, 30:61].mean() > 0.9


def test_right_drag_changes_window_and_level(qtbot, demo_window):
    v = demo_window.view
    w0, l0 = v.window
    vp = v._glw.viewport()
    c = QPoint(vp.width() // 2, vp.height() // 2)
    drag(qtbot, vp, Qt.MouseButton.RightButton, c, c + QPoint(50, -25))
    w1, l1 = v.window
    assert w1 > w0 and l1 > l0
    assert demo_window.prefs.hu_window(v.window) == (w1, l1)     # remembered for the next HU study


def test_wheel_steps_slices(qtbot, demo_window):
    v = demo_window.view
    v.set_slice(10)
    vp = v._glw.viewport()
    c = QPointF(vp.width() / 2, vp.height() / 2)
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication
    ev = QWheelEvent(c, vp.mapToGlobal(c), QPoint(0, 0), QPoint(0, -120), Qt.MouseButton.NoButton,
                     Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)
    assert v.index == 11
