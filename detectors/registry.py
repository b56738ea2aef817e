"""Detector registry derived from the modules of the ``detectors`` package."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from detectors.base import Detector, DetectorConfig
from pipeline.memory import limit_shape_caches
from pipeline.plugins import RegistryError, discover_plugins, pick

__all__ = ["RegistryError", "build", "discover"]

# Modules of the package that are infrastructure, not detectors.
_NOT_DETECTORS = ("base", "registry", "taxonomy")


def discover(package: str = "detectors") -> dict[str, type[Detector]]:
    detectors = discover_plugins(package, Detector, skip=_NOT_DETECTORS)
    for cls in detectors.values():
        if not getattr(cls, "version", None):
            raise RegistryError(f"{cls.__module__}.{cls.__qualname__} must set a version")
    return detectors


def build(names: list[str], config: DetectorConfig, package: str = "detectors") -> list[Detector]:
    """Instantiate the enabled detectors in the given order.

    A detector refuses an option value with ValueError (``structure: bogus``, ``max_windows:
    x``); that is a configuration error (exit 3) naming the detector, not an internal one (it
    was exit 1, "internal error", a careless-newcomer check of 2026-12-02).
    """
    known = discover(package)
    enabled = pick(known, names, "detector")
    check_options(config.options, enabled, known)
    limit_shape_caches()  # before any detector's first forward pass (pipeline/memory.py)
    built = []
    for cls in enabled:
        try:
            built.append(cls.create(config))
        except ValueError as exc:
            raise RegistryError(f"detector {cls.name}: invalid option in detectors.options: {exc}") from exc
    return built


def check_options(options: Mapping[str, str], enabled: Sequence[type[Detector]], known: Mapping[str, type[Detector]]) -> None:
    """Refuse an option key that no enabled detector reads (a plain key) and no known detector
    reads (a ``<name>.<key>`` key). ``strucure: off`` was ignored, the default used and nothing
    said (a careless-newcomer check, 2026-12-02)."""
    plain = {key for cls in enabled for key in cls.option_keys}
    namespaced = {f"{name}.{key}" for name, cls in known.items() for key in cls.option_keys}
    for key in options:
        if key in plain or key in namespaced:
            continue
        close = difflib.get_close_matches(key, sorted(plain | namespaced), n=1)
        enabled_names = ", ".join(cls.name for cls in enabled)
        raise RegistryError(
            f"unknown key {key!r} in detectors.options: no enabled detector ({enabled_names}) reads it"
            + (f"; did you mean {close[0]!r}?" if close else f"; they read {', '.join(sorted(plain)) or 'no options'}")
        )
