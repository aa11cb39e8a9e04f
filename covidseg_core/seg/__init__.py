"""Stage 2: per-slice targets -> the lightweight segmenter (losses, targets and split, the training loop).
Never imports weak/."""
