"""Detector registry derived from the modules of the ``detectors`` package."""

from __future__ import annotations

from detectors.base import Detector, DetectorConfig
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
    """Instantiate the enabled detectors in the given order."""
    return [cls.create(config) for cls in pick(discover(package), names, "detector")]
