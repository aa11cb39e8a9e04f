"""Dialogs: opening (project folder, DICOM series), training settings, export."""
