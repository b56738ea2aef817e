"""Training data for the ML detectors: packaged corpora loaders, data assembly, fine-tuning, calibration.

Only corpora that ship inside installed packages are read (never a model hub), and the sources
reserved for independent evaluation are refused in code (see ``corpora.RESERVED``).
"""
