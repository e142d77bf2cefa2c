"""The built-in backbone families, loaded on first use, and the look-ups callers use.

Imported lazily: the family modules register themselves when imported, and keeping
them (and keras-hub) out of module import time keeps `train.py --help` fast.
"""

from __future__ import annotations

from models.backbones.registry import BackboneSpec, lookup, registered


def load_builtin_backbones() -> None:
    from models.backbones import keras_apps, text_bert  # noqa: F401
    from models.backbones import conv4  # noqa: F401  (after the pretrained ones, so listings show those first)


def get_backbone(name: str) -> BackboneSpec:
    load_builtin_backbones()
    return lookup(name)


def list_backbones() -> list[BackboneSpec]:
    load_builtin_backbones()
    return registered()
