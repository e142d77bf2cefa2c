"""Evaluate a trained run on a data folder (its test/ split when present).

    python evaluate.py RUN_DIR DATA_DIR [--name NAME] [--top-k 5] [--apply-temperature]
    python evaluate.py RUN_DIR DATA_DIR --compare OTHER_RUN_DIR...
"""

from __future__ import annotations

import argparse
import sys

from app.cli import prepare_environment, run_safely, setup_logging

prepare_environment()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", help="Run directory written by train.py.")
    parser.add_argument("data_dir", help="Data folder with one subfolder per class (or train/val/test splits).")
    parser.add_argument("--name", default=None, help="Name of the eval/<name>/ output folder (default: <folder>-<split>).")
    parser.add_argument("--batch-size", type=int, default=32, help="Batch size for prediction.")
    parser.add_argument("--top-k", type=int, default=5, help="k for top-k accuracy (capped at the number of classes).")
    parser.add_argument("--allow-missing-classes", action="store_true",
                        help="Evaluate even if some of the run's classes have no examples in the folder.")
    parser.add_argument("--apply-temperature", action="store_true",
                        help="Rescale probabilities with the temperature fitted on validation data at training time.")
    parser.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples for the 95%% intervals.")
    parser.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR",
                        help="More runs to evaluate on the same data; prints one comparison table.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def command() -> int:
        from app.evaluation import evaluate_run

        options = dict(name=args.name, batch_size=args.batch_size, top_k=args.top_k,
                       allow_missing_classes=args.allow_missing_classes,
                       apply_temperature_scaling=args.apply_temperature, bootstrap_resamples=args.bootstrap)
        if args.compare:
            from app.evaluation import compare_runs

            table, _ = compare_runs([args.run_dir, *args.compare], args.data_dir, **options)
            print(table)
            return 0
        metrics, out_dir = evaluate_run(args.run_dir, args.data_dir, **options)
        low, high = metrics["ci95"]["accuracy"]
        print(
            f"Accuracy {metrics['accuracy']:.4f} [95% CI {low:.3f}-{high:.3f}] (top-{metrics['k']} {metrics['top_k_accuracy']:.4f}, "
            f"macro F1 {metrics['macro_f1']:.4f}) on {metrics['num_examples']} examples: {metrics['split']}.\n"
            f"Report: {out_dir / 'report.md'}"
        )
        return 0

    return run_safely(command)


if __name__ == "__main__":
    sys.exit(main())
