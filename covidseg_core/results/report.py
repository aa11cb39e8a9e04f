"""A one-page PDF report of a study's infection burden (matplotlib, no pyplot: no GUI backend, no global state).

The page: study identifiers and dates, infected volume in mL and as % of the lung (each lung on its own when the
lung field separates them), the burden along the slices, three key slices with the mask over them, the run and
settings that made the mask, and a plain statement that this is a research tool. Every number on it comes from
quantify() on the same mask the export writes (results/export.assemble_mask).
"""
from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write
from ..errors import InputError
from ..events import CancelToken, Done, Progress
from ..io.loader import open_study
from ..study import Study
from .export import RUN_SETTING_KEYS, assemble_mask, choose_source, guard_outputs
from .quantify import lung_fields_steps, quantify

RESEARCH_STATEMENT = ("Research tool: not a medical device, not for diagnosis or treatment decisions. The mask and "
                      "the volumes were computed automatically and must be checked by a qualified reader.")
PAGE_INCHES = (8.27, 11.69)         # A4 portrait
SECOND_LUNG_MIN = 0.25              # the second lung component must hold this share of the first to count
N_KEY_SLICES = 3


# --- the numbers --------------------------------------------------------------------------------------------

def split_lungs(study: Study, lungs: np.ndarray, mask: np.ndarray) -> dict | None:
    """Right and left lung, when the lung field separates them: on at least half of the slices with lung, its two
    largest parts lie side by side. Each voxel of the lung (field or infection) goes to the side of that slice's
    midline between the two parts (the median midline on slices where they touch), so the two sides add up to
    the whole-lung numbers exactly. None when the field does not separate them."""
    from scipy import ndimage as ndi

    nz, _, nx = study.shape
    mids: dict[int, float] = {}
    with_lung = 0
    for z in range(nz):
        if not lungs[z].any():
            continue
        with_lung += 1
        labels, n = ndi.label(lungs[z])
        if n < 2:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        a, b = np.argsort(sizes)[::-1][:2] + 1
        if sizes[b - 1] < SECOND_LUNG_MIN * sizes[a - 1]:
            continue
        ca, cb = (float(np.nonzero(labels == k)[1].mean()) for k in (a, b))
        if abs(ca - cb) >= 0.15 * nx:            # side by side, not one above the other
            mids[z] = (ca + cb) / 2
    if not mids or len(mids) < 0.5 * with_lung:
        return None
    fallback = float(np.median(list(mids.values())))
    columns = np.arange(nx)[None, None, :]
    midline = np.array([mids.get(z, fallback) for z in range(nz)])[:, None, None]
    low = np.broadcast_to(columns < midline, study.shape)
    lung = lungs | mask
    # LPS: the x axis points to the patient's left when its L component is positive (radiological display)
    low_side, high_side = ("right", "left") if study.direction[0] >= 0 else ("left", "right")
    voxel_ml = float(np.prod(study.spacing)) / 1000.0
    sides = {}
    for name, part in ((low_side, low), (high_side, ~low)):
        inf, tot = float((mask & part).sum()), float((lung & part).sum())
        sides[name] = {"infected_ml": round(inf * voxel_ml, 3), "lung_ml": round(tot * voxel_ml, 3),
                       "infected_percent": round(100.0 * inf / tot, 3) if tot else 0.0}
    return {"right": sides["right"], "left": sides["left"], "separated_slices": len(mids)}


def key_slices(mask: np.ndarray, n: int = N_KEY_SLICES) -> list[int]:
    """The n slices with the most infection (in slice order); slices spread over the study fill up the rest."""
    per_slice = mask.reshape(mask.shape[0], -1).sum(1)
    chosen = [int(z) for z in np.argsort(-per_slice, kind="stable") if per_slice[z] > 0][:n]
    for z in np.linspace(0, mask.shape[0] - 1, n + 2)[1:-1].round().astype(int):
        if len(chosen) >= min(n, mask.shape[0]):
            break
        if int(z) not in chosen:
            chosen.append(int(z))
    for z in range(mask.shape[0]):
        if len(chosen) >= min(n, mask.shape[0]):
            break
        if z not in chosen:
            chosen.append(z)
    return sorted(chosen)


def _identifiers(study: Study, record: dict) -> dict:
    ids = {"source_id": record["id"], "study": Path(study.source).name, "kind": study.kind}
    if study.kind == "dicom":
        from ..io import dicom

        headers = dicom.scan_folder(study.source).series.get(study.meta.get("series_uid") or "", [])
        ds = headers[0].ds if headers else {}
        for key, keyword in (("patient_id", "PatientID"), ("patient_name", "PatientName"),
                             ("study_date", "StudyDate"), ("accession", "AccessionNumber"),
                             ("series_description", "SeriesDescription"), ("series_uid", "SeriesInstanceUID"),
                             ("study_uid", "StudyInstanceUID")):
            value = str(ds.get(keyword, "") or "") if ds else ""
            if value:
                ids[key] = value
    return ids


def _run_info(project, run: str | None) -> dict:
    if not run:
        return {"run": None, "settings": {}}
    record = next((r for r in project.runs if r["path"] == run), {})
    summary = record.get("summary") or {}
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    return {"run": Path(run).name, "status": summary.get("status"), "added": record.get("added"),
            "settings": {k: v for k, v in settings.items() if k in RUN_SETTING_KEYS or k == "device"}}


def report_data(project, source_id: str, study: Study, mask: np.ndarray, lungs: np.ndarray, info: dict) -> dict:
    """Everything the page shows, as plain data (the tests compare it with quantify())."""
    quant = quantify(study, mask, lungs)
    return {"identifiers": _identifiers(study, project.source(source_id)),
            "report_date": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "quantification": quant, "per_lung": split_lungs(study, lungs, mask > 0),
            "key_slices": key_slices(mask), "masks": info.get("which", "corrected"),
            "corrected_slices": info.get("corrected_slices", 0), "version": __version__,
            **_run_info(project, info.get("run"))}


# --- the page -----------------------------------------------------------------------------------------------

def _fmt_date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def summary_lines(data: dict) -> list[str]:
    """The numbers as the page prints them."""
    q = data["quantification"]
    lines = [f"Infected volume: {q['infected_ml']:.1f} mL, {q['infected_percent']:.1f} % of the lung "
             f"(lung {q['lung_ml']:.1f} mL)"]
    if data["per_lung"]:
        for side in ("right", "left"):
            s = data["per_lung"][side]
            lines.append(f"{side.capitalize()} lung: {s['infected_ml']:.1f} mL, {s['infected_percent']:.1f} % "
                         f"(lung {s['lung_ml']:.1f} mL)")
    else:
        lines.append("Right and left lung: not separated by the lung field (whole-lung values only)")
    infected = sum(1 for r in q["slices"] if r["infected_ml"] > 0)
    lines.append(f"Slices with infection: {infected} of {len(q['slices'])}; voxel "
                 f"{' x '.join(f'{v:.3g}' for v in q['spacing_mm'])} mm"
                 + ("" if q["values"] == "HU" else " (not HU: an image folder; sizes assume its spacing)"))
    return lines


def render_report(data: dict, study: Study, mask: np.ndarray):
    """The page as a matplotlib Figure (saved as PDF by report_job, as PNG for docs/ and the tests)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=PAGE_INCHES)
    grid = fig.add_gridspec(4, 3, height_ratios=[0.95, 0.9, 1.45, 0.6], hspace=0.35, wspace=0.06,
                            left=0.07, right=0.95, top=0.95, bottom=0.1)
    ids = data["identifiers"]
    fig.text(0.07, 0.975, "CovidSeg Assist: COVID-19 lung infection report", fontsize=15, weight="bold",
             va="top")
    head = fig.add_subplot(grid[0, :])
    head.axis("off")
    id_lines = [f"Study: {ids['study']} (project source {ids['source_id']}, {ids['kind']})"]
    if ids.get("patient_id") or ids.get("patient_name"):
        id_lines.append(f"Patient: {ids.get('patient_name', '')} ID {ids.get('patient_id', '-')}".replace("  ", " "))
    if ids.get("study_date") or ids.get("accession"):
        id_lines.append(f"Study date: {_fmt_date(ids.get('study_date', '')) or '-'}   "
                        f"Accession: {ids.get('accession', '-')}")
    if ids.get("series_uid"):
        id_lines.append(f"Series: {ids.get('series_description', '')} {ids['series_uid']}")
    id_lines.append(f"Report date: {data['report_date']}")
    head.text(0, 1, "\n".join(id_lines), va="top", fontsize=9, family="monospace", transform=head.transAxes)
    head.text(0, 0.0, "\n".join(summary_lines(data)), va="bottom", fontsize=10.5, weight="bold",
              transform=head.transAxes)

    q = data["quantification"]
    plot = fig.add_subplot(grid[1, :])
    z = np.arange(len(q["slices"]))
    percent = [r["infected_percent"] for r in q["slices"]]
    plot.fill_between(z, percent, step="mid", color="tab:red", alpha=0.35)
    plot.step(z, percent, where="mid", color="tab:red", lw=1.2)
    for k in data["key_slices"]:
        plot.axvline(k, color="0.3", lw=0.8, ls="--")
    plot.set_xlim(-0.5, len(z) - 0.5)
    plot.set_ylim(0, max(5.0, max(percent, default=0) * 1.15))
    plot.set_xlabel("slice (dashed: the key slices below)", fontsize=8)
    plot.set_ylabel("infected % of the slice's lung", fontsize=8)
    plot.set_title("Burden along the slices", fontsize=10, loc="left")
    plot.tick_params(labelsize=7)

    for i, k in enumerate(data["key_slices"]):
        ax = fig.add_subplot(grid[2, i])
        ax.imshow(study.unit_range(k), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        overlay = np.zeros((*mask.shape[1:], 4), np.float32)
        overlay[mask[k] > 0] = (1.0, 0.1, 0.1, 0.45)
        ax.imshow(overlay, interpolation="nearest")
        if mask[k].any():
            ax.contour(mask[k] > 0, levels=[0.5], colors=["red"], linewidths=0.6)
        ax.set_title(f"slice {k}: {q['slices'][k]['infected_ml']:.2f} mL, "
                     f"{q['slices'][k]['infected_percent']:.1f} %", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])

    run = fig.add_subplot(grid[3, :])
    run.axis("off")
    settings = ", ".join(f"{k} {v}" for k, v in sorted(data["settings"].items())) or "not recorded"
    run_lines = [
        f"Model / run: {data['run'] or 'none (corrections only)'}"
        + (f", {data['status']}" if data.get("status") else "") + (f", {data['added']}" if data.get("added") else ""),
        f"Settings: {settings}",
        f"Mask: {data['masks']} ({data['corrected_slices']} slice(s) corrected by the user); "
        "lung field: covidseg's lung-field method",
        f"Software: CovidSeg Assist {data['version']}",
    ]
    run.text(0, 1, "\n".join(textwrap.fill(line, 120, subsequent_indent="    ") for line in run_lines), va="top",
             fontsize=8.5, transform=run.transAxes)
    fig.text(0.07, 0.06, textwrap.fill(RESEARCH_STATEMENT, 88), va="top", fontsize=9.5, weight="bold",
             color="darkred")
    return fig


def report_job(project, out: str | Path, source_id: str | None = None, which: str = "corrected",
               cancel: CancelToken | None = None, overwrite: bool = False):
    """Job: write the one-page PDF report of a source (the only or given one) at `out`. Done(report summary)."""
    out = Path(out)
    if out.suffix.lower() != ".pdf":
        raise InputError(f"{out} is not a PDF file name.", "Name the report like report.pdf.")
    source_id = choose_source(project, source_id)
    guard_outputs(project, [out], overwrite)
    yield Progress("report", 0, 4, "reading the study")
    study = open_study(project.source_path(source_id), series_uid=project.source(source_id).get("series_uid"))
    mask, info = assemble_mask(project, source_id, study, which)
    lungs = yield from lung_fields_steps(study, cancel)
    yield Progress("report", 2, 4, "measuring")
    data = report_data(project, source_id, study, mask, lungs, info)
    if cancel:
        cancel.raise_if_cancelled()
    yield Progress("report", 3, 4, "drawing the page")
    fig = render_report(data, study, mask)
    meta = {"Title": f"CovidSeg Assist report: {data['identifiers']['study']}", "Creator": f"CovidSeg Assist "
            f"{__version__}", "Subject": "COVID-19 lung infection burden (research tool)"}
    from matplotlib import rc_context

    with rc_context({"pdf.fonttype": 42}):     # TrueType text: selectable and extractable in any PDF reader
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="pdf", metadata=meta))
    yield Progress("report", 4, 4, "done")
    q = data["quantification"]
    yield Done({"report": str(out), "source": source_id, "infected_ml": q["infected_ml"],
                "infected_percent": q["infected_percent"], "lung_ml": q["lung_ml"], "per_lung": data["per_lung"],
                "key_slices": data["key_slices"], "run": data["run"], "masks": which,
                "corrected_slices": data["corrected_slices"]})
