"""Evaluate a trained run on a data folder (its test/ split when present).

    python evaluate.py RUN_DIR DATA_DIR [--name NAME] [--top-k 5]
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def command() -> int:
        from app.evaluation import evaluate_run

        metrics, out_dir = evaluate_run(args.run_dir, args.data_dir, args.name, args.batch_size, args.top_k,
                                        args.allow_missing_classes)
        print(
            f"Accuracy {metrics['accuracy']:.4f} (top-{metrics['k']} {metrics['top_k_accuracy']:.4f}, "
            f"macro F1 {metrics['macro_f1']:.4f}) on {metrics['num_examples']} examples: {metrics['split']}.\n"
            f"Report: {out_dir / 'report.md'}"
        )
        return 0

    return run_safely(command)


if __name__ == "__main__":
    sys.exit(main())
