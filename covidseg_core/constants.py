"""The project's vocabulary, defined once: slice labels, fusion modes, devices, and the mask value conventions."""
from __future__ import annotations

LABELS = ("infected", "clean")              # what a radiologist can say about a slice (None = unlabelled)
FUSION_MODES = ("avg", "max", "none")       # attention fusion of the per-epoch CAMs (weak/cam.py)
DEVICES = ("auto", "cpu", "cuda")           # where training and prediction run (infer/device.py)
LUNG_METHODS = ("model", "threshold")       # lung field: learned (imaging/lung_model.py) or by threshold
SYNTHETIC_MODES = ("auto", "off", "only")   # synthetic lesions in stage 2 (synth/): with pseudo masks, none, alone
PSEUDO_CUES = ("prior", "cam")        # where an infected slice's pseudo mask comes from (weak/prior_cue.py)
SLICE_SCORES = ("classifier+prior", "classifier")   # a slice's probability of infection (weak/scoring.py)

# Masks in memory: 0 background, 1 infection, 255 ignore (no loss in stage 2)
BACKGROUND, FOREGROUND, IGNORE = 0, 1, 255
# Pseudo masks on disk (RUN/pseudo/*.png): 0 background, 255 infection, 127 ignore
PNG_BACKGROUND, PNG_FOREGROUND, PNG_IGNORE = 0, 255, 127
