"""Backbone registry: name -> factory. See registry.py."""

from models.backbones.registry import BACKBONES, BackboneSpec, get_backbone

__all__ = ["BACKBONES", "BackboneSpec", "get_backbone"]
