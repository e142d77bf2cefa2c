"""Export a trained run for serving (SavedModel) or devices (LiteRT), checked against model.keras.

    python export.py RUN_DIR                                   # SavedModel -> RUN_DIR/export/savedmodel/
    python export.py RUN_DIR --format litert [--quantize none|float16|dynamic|int8]
                                                               # -> RUN_DIR/export/litert-<float32|...>/model.tflite
    python export.py RUN_DIR --reject none                     # SavedModel without the unknown-class outputs

Every export is checked on the run's held-out files (manifest test split, else validation)
before it is written: float formats must pick the same class as model.keras on at least 99.5%
of them, quantized ones (dynamic, int8) must keep accuracy within 2 points. The numbers go to
parity.json beside the artifact (PATH.parity-failed.json when the check failed and nothing was written). Evaluate an export with: evaluate.py RUN_DIR DATA_DIR --artifact PATH
"""

from __future__ import annotations

import argparse

from app.cli import (OneErrorLineParser, batch_size, exit_command, path_argument, positive_int, prepare_environment,
                     run_safely, setup_logging)

prepare_environment(splits_batches=False)  # one device, whole batches: oneDNN stays on (app/cli.py)

FORMATS = ("savedmodel", "litert")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


def build_parser() -> argparse.ArgumentParser:
    parser = OneErrorLineParser(prog="export.py", description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=path_argument, help="Run directory written by train.py.")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="savedmodel: TF Serving / tf.saved_model.load; signature serving_default takes encoded "
                        "image files or raw texts (tf.string), image runs also get a pixels signature (uint8). "
                        "litert: a .tflite for phones and microcontrollers (image runs only; uint8 pixels in). "
                        "Default: savedmodel.")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                        help="LiteRT only. none: float32; float16: half-size weights; dynamic: int8 weights; int8: "
                        "int8 weights and activations, calibrated on the run's training files. Default: none.")
    parser.add_argument("--output", default=None, metavar="PATH",
                        help="Folder to create for the export (must not exist). Default: RUN_DIR/export/savedmodel "
                        "or RUN_DIR/export/litert-<float32|float16|dynamic|int8>.")
    parser.add_argument("--representative-files", type=positive_int, default=500, metavar="N",
                        help="int8: how many training files (balanced over classes) calibrate the ranges; at least "
                        "20 must exist. Default: 500.")
    parser.add_argument("--reject", choices=("auto", "none"), default="auto",
                        help="SavedModel: auto: the run's unknown-class detector goes into the graph (outputs "
                        "unknown_score and unknown, as predict.py rejects); none: probabilities and top_class only, "
                        "as predict.py --reject none (and the detector's files are not read). LiteRT exports carry "
                        "probabilities only either way. Default: auto.")
    parser.add_argument("--batch-size", type=batch_size, default=32, help="Batch size of the parity check. Default: 32.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def command() -> int:
        from app.exporting import ExportRequest, export_run

        result = export_run(ExportRequest(args.run_dir, args.format, args.quantize, args.output,
                                          args.representative_files, args.batch_size, args.reject))
        for check in [*result.report.checks, *result.report.unknown_checks]:
            print(check.summary())
        print(f"Exported: {result.report.artifact}\nParity report: {result.path / 'parity.json'}")
        return 0

    return run_safely(command)


if __name__ == "__main__":
    exit_command(main)
