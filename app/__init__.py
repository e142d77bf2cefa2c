"""Orchestration: configuration, training runs, evaluation, reports, the run-directory format."""
