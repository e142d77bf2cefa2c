"""Names from the file system shown safely: plain lines, Markdown table cells, file names written."""

import pytest

from app.escaping import markdown_cell, markdown_code, markdown_text, safe_file_stem, visible


def test_visible_escapes_control_characters_only():
    assert visible("new\nline.png") == "new\\nline.png"
    assert visible("tab\there\r\x00\x1b[31m") == "tab\\there\\r\\x00\\x1b[31m"
    assert visible("evil\u202egnp.exe") == "evil\\u202egnp.exe"  # a right-to-left override would reorder it
    assert visible("not-utf8-\udcff.png") == "not-utf8-\\udcff.png"  # undecodable bytes: printable escaped
    for ordinary in ("Ünïcødé 类.png", "a|b.png", "back\\slash", "nbsp\u00a0space", "zwnj\u200cword", "ok"):
        assert visible(ordinary) == ordinary


def test_markdown_cell_keeps_one_row_and_one_column():
    assert markdown_cell("a|b.png") == "a\\|b.png"
    assert markdown_cell("new\nline.png") == "new\\nline.png"
    assert markdown_cell("a\\|b") == "a\\\\\\|b"  # the backslash stays a backslash, the pipe stays escaped
    assert markdown_cell("Ünïcødé 类") == "Ünïcødé 类"
    assert markdown_cell(3) == "3"


def test_safe_file_stem_replaces_control_and_path_hostile_characters():
    assert safe_file_stem("new\nline") == "new_line"
    assert safe_file_stem('a|b:c*d?e"f<g>h\\i') == "a_b_c_d_e_f_g_h_i"
    assert safe_file_stem("Ünïcødé 类 photo") == "Ünïcødé 类 photo"
    assert safe_file_stem("") == "_"
    long = safe_file_stem("é" * 200)
    assert len(long.encode("utf-8")) <= 150 and set(long) == {"é"}  # cut on a character boundary


@pytest.mark.parametrize("path", ["/data/plain", "/data/it`s here", "``fenced``/x", "`", "a ` b `` c", "/tab\there"])
def test_markdown_code_shows_the_whole_value_as_one_code_span(path):
    """A backtick in a path ended report.md's code span early and turned the rest of the line into Markdown."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt().parseInline(f"- Data: {markdown_code(path)} (test split)")[0].children
    spans = [token.content for token in tokens if token.type == "code_inline"]
    assert spans == [visible(path)]


def test_markdown_text_keeps_words_literal():
    assert markdown_text("a_b*c`[d]<e>") == "a\\_b\\*c\\`\\[d\\]\\<e\\>"
    assert markdown_text("great") == "great"


def test_markdown_text_writes_control_characters_visibly():
    assert markdown_text("new\nline") == "new\\nline"
