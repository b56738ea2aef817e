"""Misuse detectors, one per module; see base.Detector and registry.discover."""
