"""Predict classes with a trained run: image or text files, folders, or strings.

    python predict.py RUN_DIR FILE_OR_DIR... [--top-k 3] [--json | --jsonl]
    python predict.py RUN_DIR --text "a sentence to classify" [--text ...]   # text models
    find DIR -name '*.jpg' | python predict.py RUN_DIR --files-from -        # a list of files

A file the run's unknown-class detector rejects is printed as `unknown (closest: CLASS p)` and
marked "unknown": true in --json output; --reject none turns rejection off. --explain OUT_DIR
writes a Grad-CAM heatmap overlay per image file (where the model looked for its top class), or
for a text model one Markdown file per file or string with its token attributions.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.cli import (DefaultsHelpFormatter, OneErrorLineParser, batch_size, exit_command, path_argument,
                     positive_int, prepare_environment, run_safely, setup_logging)

prepare_environment(splits_batches=False)  # one device, whole batches: oneDNN stays on (app/cli.py)


def build_parser() -> argparse.ArgumentParser:
    parser = OneErrorLineParser(prog="predict.py", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    parser.add_argument("run_dir", type=path_argument, help="Run directory written by train.py.")
    parser.add_argument("inputs", nargs="*", type=path_argument, help="Files and/or folders (searched recursively): images for an image "
                        "model, .txt files (one example each) for a text model.")
    parser.add_argument("--files-from", type=path_argument, default=None, metavar="LIST",
                        help="Also predict the files and folders LIST names, one per line (- reads standard input: "
                             "find DIR -newer X | predict.py RUN_DIR --files-from -).")
    parser.add_argument("--text", action="append", default=[], metavar="STRING",
                        help="A string to classify with a text model (repeatable).")
    parser.add_argument("--top-k", type=positive_int, default=3, help="How many classes to show per file.")
    parser.add_argument("--batch-size", type=batch_size, default=32, help="Batch size for prediction.")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="Print one JSON document instead of text, once every "
                        "input is predicted.")
    output.add_argument("--jsonl", action="store_true", help="Print JSON Lines instead of text, as the inputs are "
                        "predicted: one object per skipped file ({file, skipped}), then one per prediction (--json's "
                        "entries).")
    parser.add_argument("--reject", choices=("auto", "none"), default="auto",
                        help="auto: report files whose unknown-class score is above the threshold fitted at training "
                             "time (train.py --reject-recall) as unknown; none: always name a known class.")
    parser.add_argument("--explain", default=None, metavar="OUT_DIR",
                        help="Image models: write one Grad-CAM overlay per file into OUT_DIR (the heatmap of the top "
                             "class on the backbone's last convolutional block). Text models: one Markdown file per "
                             "file or --text string (gradient x input token attributions for the top class).")
    return parser


def _line(prediction, visible) -> str:
    """predict.py's line for one input: a newline (or another control character) in a name is printed escaped."""
    p = prediction
    if p.unknown:
        return f"{visible(p.file)}: unknown (closest: {visible(p.top[0][0])} {p.top[0][1]:.3f})"
    return f"{visible(p.file)}: " + ", ".join(f"{visible(c)} {s:.3f}" for c, s in p.top)


def _json_entry(p) -> dict:
    """One prediction as --json and --jsonl give it (names as they are)."""
    return {"file": p.file, "top": [{"class": c, "probability": round(s, 6)} for c, s in p.top],
            **({} if p.unknown is None else {"unknown": p.unknown, "unknown_score": round(p.unknown_score, 6)})}


def _json_document(predictions, skipped) -> str:
    """--json's one document."""
    return json.dumps({"predictions": [_json_entry(p) for p in predictions],
                       "skipped": [{"file": s.path, "reason": s.reason} for s in skipped]}, indent=2)


def _require_stdout() -> None:
    """Predictions go to standard output: started with it closed (`>&-`, a service without one), Python has no
    stdout and print() drops every line, so the whole folder was predicted for nothing and ended in a traceback."""
    from app.errors import UserError

    if sys.stdout is None:
        raise UserError("Standard output is closed, so the predictions would be lost. Received: predict.py started "
                        "with no standard output (>&-). Send it to a file (> predictions.txt) or to a pipe.")


def main(argv: list[str] | None = None) -> int:
    # Intermixed: flags may come between or after the files (`RUN_DIR --json FILE...`), which
    # plain parse_args refuses for a variable-length positional list.
    args = build_parser().parse_intermixed_args(argv)
    setup_logging()

    def command() -> int:
        import numpy as np

        from app.errors import UserError
        from app.escaping import visible
        from app.input_files import read_file_list
        from app.prediction import predictions_in_chunks, prepare_prediction, write_explanations
        from app.progress import input_progress

        _require_stdout()
        listed = read_file_list(args.files_from) if args.files_from is not None else []
        if args.files_from is not None and not listed and not args.inputs and not args.text:
            source = "standard input" if args.files_from == "-" else repr(args.files_from)
            raise UserError(f"--files-from names no file: {source} holds no path (one per line). "
                            f"Received: --files-from {args.files_from}")
        job = prepare_prediction(args.run_dir, args.inputs + listed, args.top_k, args.batch_size, args.text,
                                 args.reject, args.explain)
        if args.jsonl:  # known before any prediction: first, so a reader learns of them at once
            for skipped in job.skipped:
                print(json.dumps({"file": skipped.path, "skipped": skipped.reason}))
        predictions, probabilities, unknown = [], [], []
        progress = input_progress(len(job.examples) + len(job.texts), "Predicting")
        try:  # cleared before an error line too
            for chunk, chunk_probabilities in predictions_in_chunks(job):
                progress.update(len(chunk))
                probabilities.append(chunk_probabilities)
                unknown += [p.unknown for p in chunk]  # a rejected text's explanation says so
                if args.json:  # one document, printed once every input is predicted
                    predictions += chunk
                elif args.jsonl:
                    print("\n".join(json.dumps(_json_entry(p)) for p in chunk), flush=True)
                else:  # each group's lines as soon as they are known: a large folder shows its first after seconds
                    print("\n".join(_line(p, visible) for p in chunk), flush=True)
        finally:
            progress.close()
        if args.json:
            print(_json_document(predictions, job.skipped))
        if args.explain is not None:
            write_explanations(job, np.concatenate(probabilities), unknown)
        return 0

    return run_safely(command)


if __name__ == "__main__":
    exit_command(main)
