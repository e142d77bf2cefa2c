"""train.py --help is grouped: data, backbone, training, finetune, meta, unknown classes, output, modes."""

from dataclasses import fields

from app.config import TrainConfig
from app.config_cli import OPTION_GROUPS, build_parser


def test_every_option_is_in_exactly_one_group():
    grouped = [name for names in OPTION_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(f.name for f in fields(TrainConfig))
    assert len(grouped) == len(set(grouped))


def test_help_lists_each_option_under_its_heading_in_order():
    text = build_parser().format_help()
    headings = [text.index(f"\n{title}:\n") for title in OPTION_GROUPS]
    assert headings == sorted(headings)
    ends = headings[1:] + [text.index("\nwhat train.py does")]
    for (title, names), start, end in zip(OPTION_GROUPS.items(), headings, ends):
        section = text[start:end]
        for name in names:
            shown = "data_dir" if name == "data_dir" else "--" + name.replace("_", "-")
            assert shown in section, (title, shown)
    assert "--resume" in text[ends[-1]:] and "--check" in text[ends[-1]:]


def test_grouping_changes_no_parsed_value():
    args = build_parser().parse_args(["data", "--mixup", "0.2", "--ways", "3", "--no-augment"])
    assert (args.data_dir, args.mixup, args.ways, args.augment) == ("data", 0.2, 3, False)
