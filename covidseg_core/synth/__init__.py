"""Synthetic lesions on a study's own clean slices: exact training pairs for the segmenter (issue 18).

lesions.py    the synthesiser (shapes, ground glass / consolidation, soft edges; HU or [0, 1] units)
calibrate.py  the lesion level range measured on the study's infected slices (confident CAM regions)
source.py     a seeded, resumable supply of synthetic pairs per epoch for stage 2 (each pair its own stream)
workers.py    worker processes that draw the next batches' pairs while the segmenter trains (--data-workers)
"""
