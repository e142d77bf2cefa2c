"""Runs multi-worker train.py jobs for tests/test_multi_worker.py: rounds of workers started together.

    python tests/multi_worker_runner.py ROUNDS.json RESULTS.json

ROUNDS.json: a list of rounds, run one after another; a round is a list of tests/fault_runner.py
steps ({"argv", "env", "log"}), one per worker, all started at once (each a forked child of this
process, which imported TensorFlow once: no worker pays for the import). RESULTS.json: per round,
per worker, fault_runner's {"exit", "signal", "files"}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fault_runner

if __name__ == "__main__":
    rounds_path, results_path = sys.argv[1:3]
    results = []
    for workers in json.loads(Path(rounds_path).read_text()):
        fault_runner.PARALLEL = len(workers)  # every worker of a round at once: they wait for each other
        results.append([case[0] for case in fault_runner.run_cases([[step] for step in workers])])
    Path(results_path).write_text(json.dumps(results))
