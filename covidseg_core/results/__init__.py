"""What comes out of a run: metrics, evaluation against ground truth, quantification, export."""
