"""Time Project.set_label with ~500 labels in the project: python tests/helpers/bench_project.py [TMPDIR]."""
import statistics, sys, tempfile, time
from pathlib import Path
from covidseg_core.project.api import Project
root = Path(tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None))
(root / "study").mkdir()
p = Project.create(root / "proj")
sid = p.add_source(root / "study", "images")
p.set_labels(sid, {f"img{i:04d}.png": "clean" for i in range(500)})   # ~500 labels already there
times = []
for i in range(1000):
    t = time.perf_counter()
    name = f"img{i % 500:04d}.png"
    p.set_label(sid, name, "infected" if p.label(sid, name) == "clean" else "clean")   # always a real change
    times.append((time.perf_counter() - t) * 1000)
times.sort()
sys.stdout.write(f"set_label with 500 labels (1000 calls, incl. 2 compactions): mean {statistics.mean(times):.2f} ms, "
      f"median {times[500]:.2f} ms, p95 {times[950]:.2f} ms, max {times[-1]:.2f} ms\n")
t = time.perf_counter(); p.compact(); sys.stdout.write(f"compact (snapshot rewrite): {(time.perf_counter()-t)*1000:.2f} ms\n")
for i in range(300):
    p.set_label(sid, f"img{i:04d}.png", "infected" if i % 3 else None)
folder = p.folder; p.close()
t = time.perf_counter(); q = Project.open(folder, read_only=True); sys.stdout.write(f"open: {(time.perf_counter()-t)*1000:.2f} ms\n"); q.close()
