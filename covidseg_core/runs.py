"""A run folder: everything one training run made, so it can be inspected, resumed or used to predict.
`RunFolder` is the only owner of paths inside a run: every other module asks it where a file goes.

```
RUN/config.json          what was asked (options, data) + the environment it ran in (versions, device)
RUN/plan.json            what the time budget and the device chose (budget.py): working size, width, epochs and
                         steps of both stages, the speeds measured; written as each part is decided, read back
                         when a run resumes
RUN/stage1_config.json   the stage-1 options actually used (weak/job.py)
RUN/stage1.json          written when stage 1 finished inside a `train` run (its metrics), so a resume skips it
RUN/epochs.jsonl         one JSON line per finished epoch (classifier and segmenter)
RUN/classifier.pt        the stage-1 classifier (state dict + spec)
RUN/cams/<slice>.png     fused CAM of each infected slice, 0-255
RUN/lungs/<slice>.png    lung field used as background cue, 0/255
RUN/pseudo/<slice>.png   pseudo mask: 0 background, 255 infection, 127 ignore
RUN/checkpoints/         last.pt (resume point) and best.pt (lowest validation loss; what `predict` uses)
RUN/segmenter.onnx       best.pt exported for ONNX Runtime at the end of training (infer/onnx_export.py), and
RUN/segmenter.onnx.json  its input size, the checksum of the best.pt it came from and the parity check vs PyTorch
RUN/predictions/<source id>.nii.gz   a project study predicted with this run (the app, results/export.py)
RUN/metrics.json         the final report (or status "failed"/"cancelled" and why)
```

Under torchrun rank 0 alone writes (distributed.py): on the other ranks every write here is skipped.

Every file is published atomically (write temp, fsync, rename), so a crash or a full disk leaves the previous
checkpoint in place and a half-written one is never taken as good.
"""
from __future__ import annotations

import errno
import json
import logging
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, distributed
from .atomic import atomic_write, atomic_write_json
from .checkpoints import CLASSIFIER, SEGMENTER, load_checkpoint_file
from .errors import RunError
from .events import EpochReport
from .io.images import IMAGE_SUFFIXES, read_gray

log = logging.getLogger(__name__)
# TrainConfig fields a resumed run may change: how the work is spread, not what is learnt
RESUME_FREE_OPTIONS = ("data_workers",)

RUN_FORMAT = 1                 # bump when the layout or checkpoint content changes incompatibly
CONFIG_NAME = "config.json"
EPOCHS_NAME = "epochs.jsonl"
METRICS_NAME = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
CLASSIFIER_NAME = "classifier.pt"
STAGE1_CONFIG_NAME = "stage1_config.json"
STAGE1_DONE_NAME = "stage1.json"
PLAN_NAME = "plan.json"
ONNX_NAME = "segmenter.onnx"
ONNX_INFO_NAME = "segmenter.onnx.json"
PSEUDO_DIR, CAMS_DIR, LUNGS_DIR, PREDICTIONS_DIR = "pseudo", "cams", "lungs", "predictions"


def slice_png_name(slice_id: str) -> str:
    """The PNG name of a slice in RUN/pseudo, cams, lungs (and in a --pixel-labels folder): an image file's own
    name when it is a PNG, <stem>.png for other image files, <id>.png for volume slice ids (an index, or a
    SOPInstanceUID with dots, kept whole)."""
    name = Path(slice_id).name
    suffix = Path(name).suffix.lower()
    if suffix == ".png":
        return name
    return f"{Path(name).stem}.png" if suffix in IMAGE_SUFFIXES else f"{name}.png"


def environment_info(device: str | None = None) -> dict:
    """Versions and hardware a run was made with (kept in config.json to explain differences later)."""
    import numpy
    import torch

    info = {
        "covidseg": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available()),
        "device": device,
    }
    if device and device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def _disk_error(path: Path, exc: OSError) -> RunError:
    if exc.errno == errno.ENOSPC:
        return RunError(f"The disk is full: could not write {path}. The previous checkpoint is kept.",
                        "Free some disk space and run the same command again to resume.")
    return RunError(f"Could not write {path}: {exc.strerror or exc}.",
                    "Check that the run folder is writable and on a working disk, then run the command again.")


class RunFolder:
    """Reads and writes one run folder. `create()` starts a run, `read_config()` checks an existing one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- layout ------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def checkpoint_path(self, name: str = BEST) -> Path:
        return self.checkpoint_dir / name

    @property
    def pseudo_dir(self) -> Path:
        return self.path / PSEUDO_DIR

    @property
    def cams_dir(self) -> Path:
        return self.path / CAMS_DIR

    @property
    def lungs_dir(self) -> Path:
        return self.path / LUNGS_DIR

    @property
    def classifier_path(self) -> Path:
        return self.path / CLASSIFIER_NAME

    @property
    def epochs_path(self) -> Path:
        return self.path / EPOCHS_NAME

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_NAME

    @property
    def onnx_info_path(self) -> Path:
        return self.path / ONNX_INFO_NAME

    def prediction_path(self, source_id: str) -> Path:
        return self.path / PREDICTIONS_DIR / f"{source_id}.nii.gz"

    def working_size(self, config: dict) -> int | None:
        """The size the run's networks work at: the plan's choice (RUN/plan.json) when the run has one, else the
        size its options asked for."""
        plan = self.read_json(PLAN_NAME)
        if plan and "size" in plan:
            return plan["size"]
        return config.get("options", {}).get("size")

    def has_model(self) -> bool:
        """A segmenter checkpoint to predict with exists (the run got through at least one epoch)."""
        return self.checkpoint_path(BEST).is_file()

    # --- life cycle --------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.is_file()

    def create(self, options: dict, data: dict, device: str) -> dict:
        """Start a new run: write config.json. Refuses a non-empty folder that is not a run."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a folder.", "Choose another --out.")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.exists():
            raise RunError(f"{self.path} is not empty and holds no {CONFIG_NAME}: it is not a run folder "
                           "(or a run whose start was interrupted).",
                           "Choose a new --out folder, or empty this one.")
        config = {"format": RUN_FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "options": options, "data": data, "environment": environment_info(device)}
        self._write(self.config_path, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
        return config

    def read_config(self) -> dict:
        if not self.path.is_dir():
            raise RunError(f"Run folder {self.path} does not exist.", "Check the --run path (a folder made by "
                           "`covidseg train`).")
        if not self.exists():
            raise RunError(f"{self.path} holds no {CONFIG_NAME}: it is not a run folder, or its training never "
                           "got past the start.", "Point --run at a folder made by `covidseg train`, or train again.")
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunError(f"{self.config_path} cannot be read ({exc}).",
                           "The run folder is damaged; train again into a new folder.") from exc
        if not isinstance(config, dict) or "options" not in config:
            raise RunError(f"{self.config_path} is not a covidseg run configuration.",
                           "Point --run at a folder made by `covidseg train`.")
        self.check_version(config)
        return config

    def check_version(self, config: dict) -> None:
        fmt = config.get("format")
        if fmt != RUN_FORMAT:
            raise RunError(f"Run {self.path} has format {fmt}; this covidseg ({__version__}) reads format "
                           f"{RUN_FORMAT}.", "Train again with this version, or use the covidseg version that made "
                           "the run.")
        made_with = (config.get("environment") or {}).get("covidseg", "?")
        if _major_minor(str(made_with)) != _major_minor(__version__):
            raise RunError(f"Run {self.path} was made by covidseg {made_with}; this is covidseg {__version__}.",
                           "Train again with this version, or use the covidseg version that made the run.")

    def check_resumable(self, config: dict, options: dict, data: dict) -> None:
        """A run may only be resumed with the options and data it was started with (options that change how it
        is computed, never what it learns, may differ: RESUME_FREE_OPTIONS)."""
        old = config.get("options", {})
        diff = [k for k in sorted(set(old) | set(options))
                if old.get(k) != options.get(k) and k not in RESUME_FREE_OPTIONS]
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {options.get(k)!r}" for k in diff[:4])
            raise RunError(f"Run {self.path} was started with other options ({shown}).",
                           "Re-run with the original options to resume, or choose a new --out folder.")
        if config.get("data", {}).get("fingerprint") != data.get("fingerprint"):
            raise RunError(f"Run {self.path} was trained on other data ({config.get('data', {}).get('path')}, "
                           f"{config.get('data', {}).get('n_slices')} slices).",
                           "Resume with the same --data and labels, or choose a new --out folder.")

    def ensure_intact(self) -> None:
        """Called before each write during training: a run folder deleted or moved meanwhile is an error, not
        something to silently re-create half of."""
        if not self.config_path.is_file():
            raise RunError(f"The run folder {self.path} was deleted or moved while training.",
                           "Training stopped. Start it again with a run folder that stays in place.")

    # --- writing -----------------------------------------------------------------------------------------
    def _write(self, path: Path, write) -> None:
        if not distributed.is_writer():
            return
        try:
            atomic_write(path, write)
        except OSError as exc:
            raise _disk_error(path, exc) from exc

    def append_epoch(self, record: dict) -> None:
        """Append one epoch's report to epochs.jsonl (rewritten atomically: a torn line is never left)."""
        self.ensure_intact()
        path = self.epochs_path
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        line = json.dumps(record, default=float) + "\n"
        self._write(path, lambda tmp: tmp.write_text(old + line, encoding="utf-8"))

    def append_epoch_report(self, event: EpochReport) -> None:
        """The line of a stage-1 epoch: its losses and metrics as reported."""
        self.append_epoch({"stage": event.stage, "epoch": event.epoch, **event.losses, **event.metrics,
                           "seconds": round(event.seconds, 3)})

    def forget_epochs(self) -> None:
        if distributed.is_writer():
            self.epochs_path.unlink(missing_ok=True)

    def read_epochs(self, stage: str | None = None) -> list[dict]:
        path = self.epochs_path
        if not path.is_file():
            return []
        rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
        return [r for r in rows if stage is None or r.get("stage") == stage]

    def epoch_reports(self) -> list[EpochReport]:
        """epochs.jsonl read back as EpochReports (to show a finished run's curves again). A key named "loss" or
        ending in "_loss" is a loss; the other numbers of a line are metrics."""
        records = self.read_epochs()
        last: dict = {}
        for r in records:
            last[r.get("stage")] = max(last.get(r.get("stage"), 0), int(r.get("epoch", 0)))

        def is_loss(k: str) -> bool:
            return k == "loss" or k.endswith("_loss")
        reports = []
        for r in records:
            numbers = {k: v for k, v in r.items() if isinstance(v, (int, float)) and k not in ("epoch", "seconds")}
            losses = {(k[:-5] if k.endswith("_loss") else k): float(v) for k, v in numbers.items() if is_loss(k)}
            metrics = {k: v for k, v in numbers.items() if not is_loss(k)}
            reports.append(EpochReport(str(r.get("stage")), int(r.get("epoch", 0)), last.get(r.get("stage"), 0),
                                       losses=losses, metrics=metrics, seconds=float(r.get("seconds", 0.0))))
        return reports

    def drop_epochs_after(self, stage: str, epoch: int) -> None:
        """Forget epochs of `stage` past the checkpoint we resume from (they were lost with the interruption)."""
        rows = self.read_epochs()
        keep = [r for r in rows if r.get("stage") != stage or int(r.get("epoch", 0)) <= epoch]
        if len(keep) != len(rows):
            text = "".join(json.dumps(r) + "\n" for r in keep)
            self._write(self.epochs_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def save_checkpoint(self, state: dict, name: str) -> Path:
        import torch

        self.ensure_intact()
        path = self.checkpoint_path(name)
        self._write(path, lambda tmp: torch.save(state, tmp))
        return path

    def load_checkpoint(self, name: str = BEST, map_location: str = "cpu") -> dict:
        """A segmenter checkpoint of the run, read safely (checkpoints.py)."""
        path = self.checkpoint_path(name)
        if not path.is_file():
            raise RunError(f"Run {self.path} has no checkpoint {CHECKPOINT_DIR}/{name}: its training did not finish "
                           "a single segmenter epoch.", "Run the same `covidseg train` command again to finish it.")
        return load_checkpoint_file(path, SEGMENTER, map_location)

    def load_classifier(self) -> dict:
        """The stage-1 classifier checkpoint, read safely (checkpoints.py)."""
        if not self.classifier_path.is_file():
            raise RunError(f"Run {self.path} has no finished stage 1 (classifier).", "Train it first.")
        return load_checkpoint_file(self.classifier_path, CLASSIFIER)

    def write_json(self, name: str, obj: Any, check_intact: bool = True) -> Path:
        """RUN/<name> (atomically). check_intact=False for the status of a run that is failing anyway."""
        path = self.path / name
        if not distributed.is_writer():
            return path
        if check_intact:
            self.ensure_intact()
        try:
            atomic_write_json(path, obj)
        except OSError as exc:
            raise _disk_error(path, exc) from exc
        return path

    def read_json(self, name: str) -> dict | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def write_png(self, path: Path, array) -> Path:
        """A PNG inside the run (a pseudo mask, CAM or lung field), atomically."""
        from PIL import Image

        self._write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
        return path

    def read_slice_maps(self, folder: Path, slice_ids: list[str], shape: tuple[int, int]) -> np.ndarray | None:
        """uint8 (n, *shape): the PNG stage 1 wrote for each slice in `folder` (RUN/lungs/, RUN/cams/), None when
        any is missing or of another size."""
        maps = np.zeros((len(slice_ids), *shape), dtype=np.uint8)
        for k, sid in enumerate(slice_ids):
            path = folder / slice_png_name(sid)
            if not path.is_file():
                return None
            png = read_gray(path)
            if png.shape != tuple(shape):
                return None
            maps[k] = png
        return maps

    def save_classifier(self, state: dict) -> Path:
        import torch

        self._write(self.classifier_path, lambda tmp: torch.save(state, tmp))
        return self.classifier_path
