"""Grad-CAM overlays: the blend, and the clear error for text runs."""

from types import SimpleNamespace

import numpy as np
import pytest

from app.errors import UserError
from app.explanations import overlay, require_image_run


def test_overlay_keeps_the_image_where_the_heatmap_is_cold_and_colours_it_where_hot():
    image = np.full((4, 4, 3), 200, np.uint8)
    heatmap = np.zeros((4, 4))
    heatmap[0, 0] = 1.0
    blended = overlay(image, heatmap)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert blended[0, 0, 0] > blended[0, 0, 2]  # jet's hot end is red
    assert blended[3, 3, 2] > blended[3, 3, 0]  # its cold end is blue


def test_explain_on_a_text_run_is_a_clear_error():
    with pytest.raises(UserError, match="--explain draws Grad-CAM heatmaps of image models.*text"):
        require_image_run(SimpleNamespace(modality="text"))
