"""Evaluate a trained run on a data folder (its test/ split when present).

    python evaluate.py RUN_DIR DATA_DIR [--name NAME] [--top-k 5] [--apply-temperature]
    python evaluate.py RUN_DIR DATA_DIR --unknown UNKNOWN_DIR   # + unknown-class rejection (open_set)
    python evaluate.py RUN_DIR DATA_DIR --artifact RUN_DIR/export/litert-int8   # an export.py artifact
    python evaluate.py RUN_DIR DATA_DIR --compare OTHER_RUN_DIR...
    python evaluate.py RUN_DIR DATA_DIR --episodes 600 [--ways 5] [--shots 1] [--queries 15] [--seed 0]
                       [--support-finetune auto|off]

With --episodes: few-shot (episodic) evaluation; the folder's classes may be new to the run.
"""

from __future__ import annotations

import argparse

from app.cli import (DefaultsHelpFormatter, OneErrorLineParser, batch_size, exit_command, path_argument,
                     positive_int, prepare_environment, run_safely, setup_logging, whole_number)

prepare_environment(splits_batches=False)  # one device, whole batches: oneDNN stays on (app/cli.py)

FEWSHOT_DEFAULTS = {"ways": 5, "shots": 1, "queries": 15, "seed": 0}
FEWSHOT_ONLY = {"support_finetune": "--support-finetune"}


def bootstrap_resamples(text: str) -> int:
    """argparse type for --bootstrap: 1 to app/metrics.MAX_BOOTSTRAP_RESAMPLES."""
    from app.metrics import MAX_BOOTSTRAP_RESAMPLES

    value = positive_int(text)
    if value > MAX_BOOTSTRAP_RESAMPLES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BOOTSTRAP_RESAMPLES} (1000 is usual). Received: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneErrorLineParser(prog="evaluate.py", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    parser.add_argument("run_dir", type=path_argument, help="Run directory written by train.py.")
    parser.add_argument("data_dir", type=path_argument, help="Data folder with one subfolder per class (or train/val/test splits).")
    parser.add_argument("--name", default=None, help="Name of the eval/<name>/ output folder, replaced if used before (default: "
                        "<folder>-<split>, few-shot: <folder>-<split>-<N>way-<K>shot; -2, -3, ... added when it holds "
                        "the report of another folder).")
    parser.add_argument("--batch-size", type=batch_size, default=32, help="Batch size for prediction.")
    parser.add_argument("--top-k", type=positive_int, default=5, help="k for top-k accuracy (capped at the number of classes).")
    parser.add_argument("--allow-missing-classes", action="store_true",
                        help="Evaluate even if some of the run's classes have no examples in the folder.")
    parser.add_argument("--apply-temperature", action="store_true",
                        help="Rescale probabilities with the temperature fitted on validation data at training time.")
    parser.add_argument("--bootstrap", type=bootstrap_resamples, default=1000,
                        help="Bootstrap resamples for the 95%% intervals (at most 100000).")
    parser.add_argument("--unknown", type=path_argument, default=None, metavar="UNKNOWN_DIR",
                        help="A folder of files of classes the model does not know: adds `open_set` to metrics.json "
                             "(AUROC, FPR at 95%% TPR and accuracy with rejection of the run's unknown-class score) "
                             "and a score histogram to report.md.")
    parser.add_argument("--artifact", type=path_argument, default=None, metavar="PATH",
                        help="Evaluate an export of the run (export.py: a SavedModel folder, a folder holding "
                        "model.tflite, or a .tflite file) instead of model.keras, with the same metrics and reports "
                        "(eval/<folder>-<split>-<savedmodel|litert-...>/).")
    parser.add_argument("--compare", nargs="+", type=path_argument, default=[], metavar="RUN_DIR",
                        help="More runs to evaluate on the same data; prints one comparison table.")
    fewshot = parser.add_argument_group(
        "few-shot evaluation",
        "N-way K-shot episodes drawn from the evaluation files (any classes, also ones the run never saw); "
        "mean accuracy with a 95% interval, beside nearest-centroid and logistic-regression baselines on "
        "frozen pretrained features, all on the same episodes.")
    fewshot.add_argument("--episodes", type=whole_number, default=None,
                         help="Number of episodes (600 is the usual protocol); turns on few-shot evaluation.")
    # SUPPRESS: absent unless given, so a flag without --episodes is reported, not ignored.
    for flag, text in (("--ways", "Classes per episode (N)"), ("--shots", "Support examples per class (K)"),
                       ("--queries", "Query examples per class"),
                       ("--seed", "Episode seed: the same seed and --episodes replay the same episodes")):
        default = FEWSHOT_DEFAULTS[flag[2:]]
        fewshot.add_argument(flag, type=whole_number, default=argparse.SUPPRESS, help=f"{text} (default: {default}).")
    fewshot.add_argument("--support-finetune", choices=("auto", "off"), default=argparse.SUPPRESS,
                         help="auto (default): also score the run's learner fine-tuned on each support (meta runs on "
                         "cached features), at the learning rate and steps the run chose on its validation episodes; "
                         "the chosen one (learning rate 0 = without) is the run's result. off: skip it.")
    return parser


CLASSIFICATION_ONLY = {"top_k": "--top-k", "allow_missing_classes": "--allow-missing-classes",
                       "apply_temperature": "--apply-temperature", "bootstrap": "--bootstrap", "compare": "--compare",
                       "unknown": "--unknown", "artifact": "--artifact"}


def _given(argv: list[str] | None) -> set[str]:
    """The options the user actually typed (defaults hidden), to reject flags that would be ignored."""
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def _check_mode_flags(args, argv) -> None:
    from app.errors import UserError

    given = _given(argv)
    if args.episodes is None:
        stray = [f"--{d}" for d in FEWSHOT_DEFAULTS if d in given] + [f for d, f in FEWSHOT_ONLY.items() if d in given]
        if stray:
            verb, them = ("applies", "it") if len(stray) == 1 else ("apply", "them")
            raise UserError(f"{', '.join(stray)} {verb} to few-shot evaluation only. Received: {' '.join(stray)} without "
                            f"--episodes. Add --episodes N (e.g. --episodes 600), or drop {them}.")
        return
    stray = [flag for dest, flag in CLASSIFICATION_ONLY.items() if dest in given]
    if stray:
        verb, them = ("does", "it") if len(stray) == 1 else ("do", "them")
        raise UserError(f"{', '.join(stray)} {verb} not apply to few-shot evaluation. Received: {' '.join(stray)} "
                        f"with --episodes {args.episodes}. Drop {them}, or drop --episodes.")
    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1 (600 is the usual protocol). Received: --episodes {args.episodes}")
    from app.episodic_evaluation import check_episode_count

    check_episode_count(args.episodes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def command() -> int:
        from app.errors import UserError

        _check_mode_flags(args, argv)
        from app.run_dir import check_report_name

        check_report_name(args.name)
        if args.episodes is not None:
            return fewshot_command(args)
        from app.evaluation import evaluate_run

        options = dict(name=args.name, batch_size=args.batch_size, top_k=args.top_k,
                       allow_missing_classes=args.allow_missing_classes,
                       apply_temperature_scaling=args.apply_temperature, bootstrap_resamples=args.bootstrap)
        if args.compare and args.artifact:
            raise UserError(f"--compare evaluates runs' model.keras files; it does not take --artifact. Received: "
                            f"--artifact {args.artifact} with --compare. Evaluate the artifact on its own.")
        if args.compare:
            if args.unknown:
                from app.errors import UserError

                raise UserError(f"--unknown evaluates one run; it does not combine with --compare. Received: --unknown "
                                f"{args.unknown} with --compare. Run evaluate.py --unknown once per run.")
            from app.evaluation import compare_runs

            table, _ = compare_runs([args.run_dir, *args.compare], args.data_dir, **options)
            print(table)
            return 0
        metrics, out_dir = evaluate_run(args.run_dir, args.data_dir, artifact=args.artifact, unknown_dir=args.unknown,
                                        **options)
        low, high = metrics["ci95"]["accuracy"]
        print(
            f"Accuracy {metrics['accuracy']:.4f} [95% CI {low:.3f}-{high:.3f}] (top-{metrics['k']} {metrics['top_k_accuracy']:.4f}, "
            f"macro F1 {metrics['macro_f1']:.4f}) on {metrics['num_examples']} examples: {metrics['split']}.\n"
            f"Report: {out_dir / 'report.md'}"
        )
        if "open_set" in metrics:
            o = metrics["open_set"]
            print(f"Unknown classes ({o['num_unknown']} files, score {o['score']}): AUROC {o['auroc']:.4f}, FPR at 95% "
                  f"TPR {o['fpr_at_95_tpr']:.4f}, accuracy with rejection {o['accuracy_with_rejection']:.4f}.")
        return 0

    return run_safely(command)


def fewshot_command(args) -> int:
    from app.episodic_evaluation import evaluate_episodes

    counts = {key: getattr(args, key, default) for key, default in FEWSHOT_DEFAULTS.items()}
    metrics, out_dir = evaluate_episodes(args.run_dir, args.data_dir, args.episodes, name=args.name,
                                         batch_size=args.batch_size, **counts,
                                         support_finetune=getattr(args, "support_finetune", "auto"))
    results = [("run", metrics["mean_accuracy"], metrics["ci95"])]
    finetuning = metrics["support_finetuning"]
    if "with" in finetuning:  # the run's result is one of these two; show the other too
        other = "without" if finetuning["applied"] else "with"
        results.append((f"run {other} support fine-tuning", finetuning[other]["mean_accuracy"],
                        finetuning[other]["ci95"]))
    results += [(name.replace("_", " "), b["mean_accuracy"], b["ci95"]) for name, b in metrics["baselines"].items()]
    shown = ", ".join(f"{name} {100 * mean:.2f}% ± {100 * ci:.2f}%" for name, mean, ci in results)
    transductive = " (transductive BatchNorm)" if metrics["transductive"] else ""
    print(f"{metrics['ways']}-way {metrics['shots']}-shot, {metrics['episodes']} episodes{transductive}: {shown}.\n"
          f"{metrics['verdict']}\nReport: {out_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    exit_command(main)
