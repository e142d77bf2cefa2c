"""Options a run will not use, given its strategy: one warning naming them.

Why: `train.py DATA --ways 3 --transductive --unfreeze 4` trained `linear` and said nothing, and config.json
recorded the options as if they had shaped the run. The meta-only options that would change a run's meaning
(--adapt, --target-head, --target-finetune yes, --source-stage, --init) are refused in app/config.py, and
--mixup, --pair-loss, --meta-data and the images-only options have their own warnings (app/phases.py,
app/meta_pools.py); this covers the rest of the option groups of `train.py --help`, and, within the meta
strategies, the options only some of them read.
"""

from __future__ import annotations

from app.config import META_STRATEGIES, OTHER_STRATEGIES_RECIPE, TrainConfig
from app.config_cli import OPTION_GROUPS, option_text

FINETUNE_GROUP, META_GROUP = "finetune", "meta strategies (protonet, reptile, fomaml, maml)"
# Warned about (or refused) elsewhere: see the module docstring.
OWN_MESSAGES = {"mixup", "pair_loss", "meta_data", "adapt", "target_head", "target_finetune", "source_stage", "init"}
# The meta options that only some meta strategies read (app/meta_training.py::_build_learner): `--strategy protonet
# --inner-steps 1000000` trained protonet without a word, and config.json recorded the value as if it had been used.
META_OPTION_USERS = {
    "meta_learning_rate": ("protonet", "fomaml", "maml"),  # Adam's; reptile's outer step is SGD at --meta-step-size
    "meta_step_size": ("reptile",),
    "inner_learning_rate": ("reptile", "fomaml", "maml"),
    "inner_steps": ("reptile", "fomaml", "maml"),
}


def _changed(config: TrainConfig, names) -> list[str]:
    """The options of `names` whose value differs from train.py's default, as flags (`--ways 3`, `--transductive`).
    A value the finetune recipe fills in for a strategy other than finetune (TrainConfig.apply_modality_defaults:
    `--unfreeze 2`, ...; config.json keeps it, so a resumed run has it too) counts as the default."""
    defaults = TrainConfig()
    flags = []
    for name in names:
        value = getattr(config, name)
        if name in OWN_MESSAGES or value in (getattr(defaults, name), OTHER_STRATEGIES_RECIPE.get(name, defaults)):
            continue
        flags.append(option_text(name, value))
    return flags


def _unused_meta_options_warning(config: TrainConfig, meta_input: str | None) -> str | None:
    """A meta strategy given another meta strategy's options (`--strategy protonet --inner-steps 10`), or
    --embedding-units on raw inputs (the backbone itself is the embedding there). `meta_input`: the resolved input
    mode (features or raw; None: not known, no check)."""
    reasons = {}
    for name, users in META_OPTION_USERS.items():
        if config.strategy not in users:
            for flag in _changed(config, [name]):
                reasons[flag] = f"{flag.split()[0]} applies to {', '.join(users)}"
    if meta_input == "raw":
        for flag in _changed(config, ["embedding_units"]):
            reasons[flag] = ("--embedding-units applies to the features input (on raw inputs the backbone is the "
                             "embedding)")
    if not reasons:
        return None
    flags = list(reasons)
    return (f"{', '.join(flags)} {'has' if len(flags) == 1 else 'have'} no effect with --strategy {config.strategy}: "
            f"{'; '.join(reasons.values())}. The run goes on without {'it' if len(flags) == 1 else 'them'}.")


def unused_strategy_options_warning(config: TrainConfig, modality: str, meta_input: str | None = None) -> str | None:
    """What to tell a user who gave options the run's strategy does not use (None when there are none): the meta
    strategies' options with linear or finetune, finetune's phase-2 options with linear, and with a meta strategy
    the options of the other meta strategies (and --embedding-units where `meta_input`, the resolved input mode, is
    raw)."""
    if config.strategy in META_STRATEGIES:
        return _unused_meta_options_warning(config, meta_input)
    unused = _changed(config, OPTION_GROUPS[META_GROUP])
    if config.strategy == "linear":
        phase2 = [name for name in OPTION_GROUPS[FINETUNE_GROUP]
                  if not (modality == "text" and name in ("augment", "image_cache"))]  # warned about for text
        unused = _changed(config, phase2) + unused
    if not unused:
        return None
    return (f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect with --strategy "
            f"{config.strategy}: {'it applies' if len(unused) == 1 else 'they apply'} to "
            f"{'the finetune phase 2 or the meta strategies' if config.strategy == 'linear' else 'the meta strategies'}"
            f" ({', '.join(META_STRATEGIES)}), not to this run.")
