"""Calibration and reduced precision: turns one export directory into another."""
