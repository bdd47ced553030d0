"""Versions of splinecam and of the runtimes it uses, for cache keys and reports (no heavy imports)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed_version(distribution: str = "splinecam") -> str:
    """An installed distribution's version from package metadata ("unknown" when not installed)."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def runtime_versions() -> dict[str, str | None]:
    """The inference runtimes' versions (None where not installed), without importing them."""
    out: dict[str, str | None] = {}
    for name, dist in (("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("torch", "torch"),
                       ("tensorrt", "tensorrt")):
        v = installed_version(dist)
        out[name] = None if v == "unknown" else v
    return out
