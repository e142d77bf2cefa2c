"""Train a classifier on a folder of labelled examples.

    python train.py DATA_DIR [--backbone efficientnet_lite0] [--strategy linear] [--output RUN_DIR]
    python train.py DATA_DIR --strategy finetune --unfreeze 2
    python train.py --config run.yaml [--epochs 5 ...]   # file values, overridden by the flags given
    python train.py --resume RUN_DIR      # continue an interrupted run from its last completed epoch
    python train.py DATA_DIR --check      # the data doctor only: check every file, print the report
    python train.py DATA_DIR --check --label-issues   # ... and rank likely mislabelled files (no training)
"""

from __future__ import annotations


from app.cli import exit_command, prepare_environment, run_safely, setup_logging, tensorboard_command

prepare_environment(splits_batches=True)  # training splits batches across replicas (app/cli.py)


def main(argv: list[str] | None = None) -> int:
    setup_logging()

    def command() -> int:
        from app.config_cli import config_from_args

        config, modes = config_from_args(argv)
        from app.training import check_data, run_training

        if modes.list_backbones:
            from app.backbone_list import backbone_table

            print(backbone_table())
            return 0
        if modes.check:
            from app.data_report import build_data_report, format_data_report
            from data.errors import DataError
            from app.data_folder import refuse_runs_as_data
            from data.scan import scan_folder

            refuse_runs_as_data(config.data_dir)  # before the scan, which read a run's logs/ as a class
            scan = scan_folder(config.data_dir)
            try:
                scan, examples, report = check_data(config, scan)
            except DataError:  # a folder that cannot train: what the doctor found still helps fix it
                print(format_data_report(build_data_report(scan)))
                raise
            print(format_data_report(report))
            # --exclude-label-issues N with --check shows what a run would leave out, so it needs the ranking
            # too (it was ignored: the user saw the doctor's report and no sign of the files in question).
            if modes.label_issues or config.exclude_label_issues != "0":
                from app.label_issue_run import check_label_issues, format_label_issues, format_left_out

                issues = check_label_issues(config, scan, examples, report)
                print("\n" + format_label_issues(issues, report["label_issues_note"]))
                if config.exclude_label_issues != "0":
                    print(format_left_out(config.exclude_label_issues, issues,
                                          [e for e in examples if e.split == "train"],
                                          [e for e in examples if e.split == "val"]))
            return 0
        result = run_training(config, resume_dir=getattr(modes, "resume", None))
        print(
            f"Validation accuracy {result.val_accuracy:.3f} after {result.epochs_trained} epochs "
            f"in {result.time_text}.\nRun directory: {result.run_dir}\n"
            f"TensorBoard:   {tensorboard_command()} --logdir {result.run_dir / 'logs'}"
        )
        return 0

    return run_safely(command)


if __name__ == "__main__":
    exit_command(main)
