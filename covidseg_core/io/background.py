"""Writing files on a few threads while the main thread computes (issue 14, item 2).

PIL's PNG encoder (zlib), the file system calls (write, fsync) and numpy release the GIL, so a small thread pool
overlaps the writing of masks with the network's own threads. Two threads: this is meant for a 2-core machine, and
more would take time from ONNX Runtime's and torch's threads. An error raised on a writer thread is raised again,
unchanged, on the caller's thread. (Reading is not threaded: decoding zenodo-dev's small PNGs or totalseg_ct's
JPEG 2000 DICOM slices on two threads measured no faster, their decoders hold the GIL.)
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

IO_THREADS = 2


class BackgroundWriter:
    """Runs write calls on `threads` threads while the caller goes on computing.

    Use as a context manager: leaving it normally waits for every write and raises the first error; leaving it
    with an exception (an error, a cancel, the job being closed) drops the writes not yet started and waits for
    the running ones, so no thread outlives the job (atomic_write leaves no temp file behind either way)."""

    def __init__(self, threads: int = IO_THREADS):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="covidseg-write")
        self._futures: list[Future] = []
        self._failed: Future | None = None

    def submit(self, fn: Callable[..., object], *args) -> None:
        self.raise_failed()         # stop queueing work behind a write that already failed
        future = self._pool.submit(fn, *args)
        future.add_done_callback(self._note_failure)
        self._futures.append(future)

    def _note_failure(self, future: Future) -> None:
        if self._failed is None and not future.cancelled() and future.exception() is not None:
            self._failed = future

    def raise_failed(self) -> None:
        """Raise the error of a finished write that failed, if any."""
        if self._failed is not None:
            self._failed.result()

    def wait(self) -> None:
        for f in self._futures:
            f.result()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
