"""Verdict sinks, one per module; see base.Sink and registry.discover_sinks."""
