"""Explanations: the Grad-CAM blend, and the Markdown rendering of token attributions."""

import numpy as np

from app.explanations import markdown_escape, overlay, render_attributions
from models.token_attribution import TokenAttributions


def test_overlay_keeps_the_image_where_the_heatmap_is_cold_and_colours_it_where_hot():
    image = np.full((4, 4, 3), 200, np.uint8)
    heatmap = np.zeros((4, 4))
    heatmap[0, 0] = 1.0
    blended = overlay(image, heatmap)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert blended[0, 0, 0] > blended[0, 0, 2]  # jet's hot end is red
    assert blended[3, 3, 2] > blended[3, 3, 0]  # its cold end is blue


def test_attributions_render_the_top_words_in_bold_with_signed_shares():
    result = TokenAttributions(["the", "film", "was", "great", "*not*"], [0.1, 0.0, -0.2, 0.6, 0.1], False)
    lines = render_attributions(result, top_k=2)
    # Shares of the total absolute attribution (1.0); ties keep the text's order.
    assert lines[0] == "> **the** (+10%) film was **great** (+60%) \\*not\\*"
    assert "Top words for the class: great +60%" in lines[2]
    assert "Strongest against it: was \u221220%" in lines[2]
    cut = render_attributions(TokenAttributions(["a"], [1.0], True))[0]
    assert "cut" in cut


def test_markdown_escape_keeps_words_literal():
    assert markdown_escape("a_b*c`[d]<e>") == "a\\_b\\*c\\`\\[d\\]\\<e\\>"
    assert markdown_escape("great") == "great"
