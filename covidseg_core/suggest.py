"""Which slice to label next: a run's classifier (weak/scoring.py) scores every unlabelled slice of every study
of the project, and the most informative ones are ranked first:

- uncertain: the probability of infection near the decision threshold (0.5) is worth most, a confident 0.01
  or 0.99 least (uncertainty = 1 - |p - 0.5| / 0.5);
- spread along the volume: a slice next to one already labelled (or already suggested) in the same study
  mostly repeats it, so its worth is scaled down within `spacing` slices of them;
- spread across studies: a study with few labels (and few suggestions so far) is preferred, so the classifier
  sees more patients rather than more of one.

The ranking is greedy: each pick updates the neighbourhood and study counts the next picks are judged by.

The probability is the classifier's own, not the run's slice probability (weak/scoring.slice_probabilities, its
mean with the label-free prior's evidence): a label teaches the classifier, never the prior, so only the
classifier's doubt is what labelling removes. Ranked by the mean instead, the suggestions lost to random picks at
k = 20, 40, 80 and 160 (benchmarks/label_order.py, seed 0, stop 30; exploratory). Letting the spread decide and
the uncertainty only break ties (`explore` 1 instead of 0.05) did no better than either (seeds 2 and 3, stop 33).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import RunError
from .project.studies import open_source, study_name

THRESHOLD = 0.5
EXPLORE = 0.05   # worth of a slice the classifier is sure of, against 1 for one at the threshold


def newest_classifier_run(project) -> Path | None:
    """The newest run of the project with a finished stage 1 (a classifier to score with)."""
    from .runs import RunFolder

    for run in reversed(project.runs):
        folder = RunFolder(run["path"])
        if folder.classifier_path.is_file():
            return folder.path
    return None


def _neighbour_factor(index: int, taken: list[int], spacing: int) -> float:
    """1 far from every taken slice of the study, falling linearly to 0.1 on a taken slice's neighbour."""
    if not taken:
        return 1.0
    d = min(abs(index - t) for t in taken)
    return 1.0 if d >= spacing else 0.1 + 0.9 * (d - 1) / max(1, spacing - 1)


def rank_slices(candidates: dict[str, dict], n: int, explore: float = EXPLORE) -> list[dict]:
    """Greedy ranking. `candidates`: source id -> {"probabilities": (z,) array, "labelled": set of indices,
    "n_labelled": int}; unlabelled slices are the candidates. `explore`: the worth of a slice beside its
    uncertainty (small: uncertainty decides; large: spread along the volume and across studies decides, the
    uncertainty breaks ties). Returns up to n picks (source_id, index, probability, uncertainty, score), best
    first."""
    picks: list[dict] = []
    taken = {sid: sorted(c["labelled"]) for sid, c in candidates.items()}
    chosen = {sid: 0 for sid in candidates}
    pool = {sid: [i for i in range(len(c["probabilities"])) if i not in c["labelled"]]
            for sid, c in candidates.items()}
    uncertainty = {sid: 1.0 - np.abs(np.asarray(c["probabilities"], float) - THRESHOLD) / THRESHOLD
                   for sid, c in candidates.items()}
    while len(picks) < n:
        best = None
        for sid, indices in pool.items():
            if not indices:
                continue
            c = candidates[sid]
            spacing = max(2, len(c["probabilities"]) // 16)
            study_factor = 1.0 / math.sqrt(1.0 + c["n_labelled"] + 2 * chosen[sid])
            for i in indices:
                u = float(uncertainty[sid][i])
                score = (explore + u) * _neighbour_factor(i, taken[sid], spacing) * study_factor
                if best is None or score > best[0]:
                    best = (score, sid, i, u)
        if best is None:
            break
        score, sid, i, u = best
        pool[sid].remove(i)
        taken[sid].append(i)
        chosen[sid] += 1
        picks.append({"source_id": sid, "index": i, "probability": float(candidates[sid]["probabilities"][i]),
                      "uncertainty": round(u, 4), "score": round(score, 4)})
    return picks


def suggest_slices(project, run_dir: str | Path | None = None, n: int = 20, device: str = "cpu",
                   studies: dict | None = None) -> list[dict]:
    """The n slices to label next across the project's studies, best first: rank, source_id, study (name),
    slice_id, index (in the study), probability (of infection, the classifier's: what is ranked), slice_probability
    (the run's, with the label-free prior's evidence: what the radiologist is told), uncertainty, score. Missing
    studies are left out. `run_dir`: the run whose classifier scores (default: the project's newest one with a
    classifier)."""
    from .weak.scoring import slice_scores

    run_dir = Path(run_dir) if run_dir is not None else newest_classifier_run(project)
    if run_dir is None:
        raise RunError("The project has no trained run to suggest slices with.",
                       "Train first (covidseg train --project ...), then ask for suggestions.")
    studies = dict(studies or {})
    candidates: dict[str, dict] = {}
    loaded = {}
    for record in project.sources:
        sid = record["id"]
        study = studies.get(sid)
        if study is None:
            if not project.source_path(sid).exists():
                continue
            study = open_source(project, sid)
        loaded[sid] = study
        labels = project.labels(sid)
        labelled = {i for i, s in enumerate(study.slice_ids) if s in labels}
        if len(labelled) == study.n_slices:
            probs = overall = np.full(study.n_slices, np.nan)
        else:
            probs, overall = (np.asarray(p, dtype=float) for p in slice_scores(run_dir, study.unit_range(), device))
        candidates[sid] = {"probabilities": probs, "labelled": labelled, "n_labelled": len(labelled),
                           "slice_probabilities": overall}
    picks = rank_slices(candidates, n)
    for rank, pick in enumerate(picks, 1):
        sid = pick["source_id"]
        pick.update(rank=rank, study=study_name(project, sid), slice_id=loaded[sid].slice_ids[pick["index"]],
                    probability=round(pick["probability"], 4),
                    slice_probability=round(float(candidates[sid]["slice_probabilities"][pick["index"]]), 4))
    return [{k: p[k] for k in ("rank", "source_id", "study", "slice_id", "index", "probability", "slice_probability",
                               "uncertainty", "score")} for p in picks]
