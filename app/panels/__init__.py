"""The side and bottom panels of the main window: labels, overlays, quantification, training curves, attention."""
