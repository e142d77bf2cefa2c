"""Backbone registry: name -> factory. See registry.py (the registry) and catalog.py (the built-in families)."""

from models.backbones.catalog import get_backbone, list_backbones
from models.backbones.registry import BACKBONES, BackboneSpec

__all__ = ["BACKBONES", "BackboneSpec", "get_backbone", "list_backbones"]
