"""Evaluation: sampling images for prompt sets, detectors, metrics and reports."""
