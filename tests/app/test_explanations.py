"""Explanations: the Grad-CAM blend, and the Markdown rendering of token attributions."""

import numpy as np
import pytest

from app.explanations import overlay, render_attributions
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


def test_a_word_that_occurs_twice_is_one_top_word_with_both_shares_summed():
    # "spicy" twice (+20% and +10%): one entry in the top list, +30%, both occurrences in bold with their own share.
    result = TokenAttributions(["spicy", "food", "so", "spicy", "not", "not"], [0.2, 0.25, 0.0, 0.1, -0.3, 0.15], False)
    lines = render_attributions(result, top_k=2)
    assert lines[0] == "> **spicy** (+20%) **food** (+25%) so **spicy** (+10%) not not"
    assert lines[2].startswith("Top words for the class: spicy +30% (2 occurrences), food +25%.")
    assert lines[2].count("spicy") == 1
    # Against the class: "not" as a word, its two occurrences summed (-30% + 15%).
    assert lines[2].endswith("Strongest against it: not \u221215% (2 occurrences).")
    # Words that only differ from the top words are their own words.
    other = render_attributions(TokenAttributions(["hot", "hotter"], [0.5, 0.5], False), top_k=5)
    assert "hot +50%, hotter +50%" in other[2]


def test_explanation_files_of_names_with_newlines_and_pipes(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from app import explanations

    attributor = SimpleNamespace(attribute=lambda texts, classes: [TokenAttributions(["great"], [1.0], False)
                                                                  for _ in texts])
    monkeypatch.setattr(explanations, "text_attributor", lambda run, out_dir: attributor)
    run = SimpleNamespace(class_names=["neg", "po|s"])
    names = [str(tmp_path / "new\nline.txt"), str(tmp_path / "a|b.txt"), "text: two\nlines"]
    written = explanations.write_text_attributions(run, names, ["great"] * 3, np.array([[0.1, 0.9]] * 3),
                                                   tmp_path / "out")
    assert [p.name for p in written] == ["0000-new_line-tokens.md", "0001-a_b-tokens.md", "0002-text-tokens.md"]
    first = written[0].read_text(encoding="utf-8").split("\n")
    assert first[0] == f"# `{tmp_path}/new\\nline.txt`"  # the heading stays one line
    assert "Predicted po\\|s (0.900)" in first[2]
    assert written[2].read_text(encoding="utf-8").startswith("# `text: two\\nlines`\n")
    assert explanations._output_stem(7, "x\ty/z") == "0007-x_y_z"


def test_an_explain_folder_that_refuses_writes_is_a_clear_error(tmp_path, monkeypatch):
    import tempfile

    from app.errors import UserError
    from app.explanations import explain_folder

    def read_only(*args, **kwargs):  # what a folder without write permission answers (tests may run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(UserError, match="--explain cannot write into .*Permission denied"):
        explain_folder(tmp_path / "out")


def test_an_empty_explain_folder_or_a_run_directory_is_refused(tmp_path):
    """--explain '' wrote the overlays into the current folder; --explain RUN_DIR among the run's own files."""
    from app import run_dir as rd
    from app.errors import UserError
    from app.explanations import explain_folder

    with pytest.raises(UserError, match=r"Received: --explain '' \(empty\)"):
        explain_folder("")
    run = tmp_path / "run"
    run.mkdir()
    (run / rd.METADATA_FILE).write_text("{}")
    with pytest.raises(UserError, match="is a run directory.*--explain '.*/run/explanations'"):
        explain_folder(run)
    assert explain_folder(run / "explanations").is_dir()  # a folder of their own inside it is fine
    assert sorted(p.name for p in run.iterdir()) == ["explanations", rd.METADATA_FILE]
