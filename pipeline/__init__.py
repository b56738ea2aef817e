"""misuse-monitor streaming pipeline: source -> decode -> detect -> sinks."""
