"""One warning for the options a run's strategy does not use (app/unused_options.py)."""

from app.config import META_STRATEGIES, TrainConfig
from app.config_cli import OPTION_GROUPS
from app.unused_options import FINETUNE_GROUP, META_GROUP, unused_strategy_options_warning


def test_meta_and_phase_2_options_with_linear_are_named_in_one_warning():
    config = TrainConfig(data_dir="d", ways=3, transductive=True, unfreeze="4", lr_decay=0.3, augment=False)
    warning = unused_strategy_options_warning(config, "image")
    for flag in ("--ways 3", "--transductive", "--unfreeze 4", "--lr-decay 0.3", "--no-augment"):
        assert flag in warning
    assert "have no effect with --strategy linear" in warning


def test_finetune_uses_its_own_options_and_is_told_about_the_meta_ones():
    config = TrainConfig(data_dir="d", strategy="finetune", unfreeze="4", lr_decay=0.3, shots=2)
    assert unused_strategy_options_warning(config, "image") == (
        "--shots 2 has no effect with --strategy finetune: it applies to the meta strategies "
        f"({', '.join(META_STRATEGIES)}), not to this run.")


def test_defaults_options_used_and_options_with_their_own_message_give_no_warning():
    assert unused_strategy_options_warning(TrainConfig(data_dir="d"), "image") is None
    # What the finetune recipe fills in for every strategy (and config.json keeps, for a resume) is no user's option.
    filled = TrainConfig(data_dir="d")
    assert filled.apply_modality_defaults("image", 30.0)
    assert unused_strategy_options_warning(filled, "image") is None
    assert unused_strategy_options_warning(TrainConfig(data_dir="d", strategy="protonet", unfreeze="4"), "text") is None
    # --mixup, --pair-loss and --meta-data have their own warnings; --no-augment on text too (images only).
    assert unused_strategy_options_warning(TrainConfig(data_dir="d", mixup=0.2, pair_loss=1.0, meta_data="src",
                                                       augment=False), "text") is None


def test_the_groups_it_reads_are_train_py_help_groups():
    assert {FINETUNE_GROUP, META_GROUP} <= set(OPTION_GROUPS)
