"""Helpers for the GUI tests (a module of its own: `conftest` names clash between test folders). Their timeouts
are liveness bounds (a job that never ends), generous so that a machine busy with other work passes."""
import threading

from PySide6.QtCore import QObject, Signal


def wait_started_up(qtbot, w, timeout=180000):
    """Start-up is over when the device probe (which also warms up torch's lazy imports) has reported."""
    qtbot.waitUntil(lambda: w.device_label.text().startswith("Device: ") and "…" not in w.device_label.text(),
                    timeout=timeout)


def wait_idle(qtbot, w, timeout=180000):
    """Wait until no job runs (and its results were handled)."""
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=timeout)
    qtbot.wait(20)


def open_study(qtbot, w, path, project_dir):
    w.open_path(path, project_folder=project_dir)
    qtbot.waitUntil(lambda: w.session.has_study and not w.jobs.busy, timeout=180000)
    qtbot.wait(20)


class GuiPing(QObject):
    """Proof, without a clock, that the GUI thread handles events while a job works. Made on the GUI thread;
    `from_job()` is called on the job thread between two of its events: it posts an event to the GUI thread and
    waits until the GUI thread has handled it, so the job's next event cannot come before the GUI did. The wait
    is a liveness bound (a GUI thread blocked for good), not a speed bound. Stalls are measured by
    benchmarks/gui_stall.py, not by the tests."""

    asked = Signal()

    def __init__(self, busy):
        super().__init__()
        self.gui_thread = threading.get_ident()
        self._busy = busy
        self._answered = threading.Event()
        self.answers = []          # (thread that handled the ping, was the job busy then)
        self.asked.connect(self._answer)       # auto: queued when emitted from another thread

    def _answer(self):
        self.answers.append((threading.get_ident(), self._busy()))
        self._answered.set()

    def from_job(self, timeout_s=120.0) -> bool:
        assert threading.get_ident() != self.gui_thread, "from_job() is for the job thread"
        self._answered.clear()
        self.asked.emit()
        return self._answered.wait(timeout_s)


class ForwardThreads:
    """The threads (and torch thread counts) every network forward ran on while installed: a global forward hook."""

    def __init__(self):
        self.threads = set()
        self.torch_threads = set()
        self._handle = None

    def _hook(self, module, args, output):
        import torch
        self.threads.add(threading.get_ident())
        self.torch_threads.add(torch.get_num_threads())

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_hook
        self._handle = register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
