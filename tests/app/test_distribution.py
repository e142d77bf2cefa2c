"""--distribute and METATUNE_CPU_DEVICES: resolution, the bad inputs of issue 19, and the parity pattern."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import app.cli
import train
from app.cpu_devices import ENV_VAR, ONEDNN_VAR, avoid_onednn_for_split_batches, requested_cpu_devices
from app.distribution import check_batch_sizes, parse_tf_config, resolve_distribution
from app.errors import UserError
from error_lines import one_error_line

ROOT = Path(__file__).resolve().parents[2]
TWO_WORKERS = {"cluster": {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}, "task": {"type": "worker", "index": 1}}


def _one_error_line(capsys, *fragments):
    one_error_line(capsys.readouterr().err, *fragments, marker="ERROR")


def test_none_and_auto_on_one_device_train_as_before():
    for mode in ("none", "auto"):
        distribution = resolve_distribution(mode, batch_size=1, meta_batch_size=3)
        assert distribution.info.to_metadata() == {"strategy": "none", "replicas": 1, "workers": 1}


@pytest.mark.parametrize("mode, strategy, says", [
    ("multi-worker", "reptile", ["--distribute multi-worker does not support --strategy reptile",
                                 "--distribute multi-worker with --strategy linear or finetune"]),
    ("mirrored", "protonet", ["--distribute mirrored does not support --strategy protonet", "whole episodes per replica",
                              "Received: --distribute mirrored --strategy protonet", "--strategy linear or finetune"]),
    ("mirrored", "maml", ["does not support --strategy maml", "--distribute none with --strategy maml"]),
])
def test_what_cannot_run_distributed_is_refused_with_one_error(tmp_path, capsys, monkeypatch, mode, strategy, says):
    monkeypatch.setenv("TF_CONFIG", json.dumps(TWO_WORKERS))
    assert train.main([str(tmp_path), "--distribute", mode, "--strategy", strategy, "--meta-batch-size", "2",
                       "--output", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, *says)
    assert not any(tmp_path.iterdir())  # refused before any work


def test_auto_trains_meta_strategies_on_one_device():
    distribution = resolve_distribution("auto", batch_size=4, meta_batch_size=3, training_strategy="reptile")
    assert distribution.info.to_metadata() == {"strategy": "none", "replicas": 1, "workers": 1}


def test_multi_worker_without_tf_config_says_how_to_set_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert train.main([str(tmp_path), "--distribute", "multi-worker", "--output", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, "needs TF_CONFIG", "Received: TF_CONFIG unset", '"task": {"type": "worker"')


def test_a_multi_worker_resume_without_tf_config_says_how_to_resume():
    """--resume takes no --distribute: the advice must not be "use --distribute mirrored" (it was), but TF_CONFIG
    on every worker, or a one-worker cluster on this machine."""
    with pytest.raises(UserError) as raised:
        parse_tf_config(None, resume_dir="/runs/r")
    message = str(raised.value)
    assert "Received: --resume /runs/r with TF_CONFIG unset" in message and "--distribute mirrored" not in message
    one_worker = message.split("TF_CONFIG='")[1].split("'")[0]
    assert parse_tf_config(one_worker).workers == ("127.0.0.1:12345",)
    assert message.endswith("python train.py --resume /runs/r")


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not JSON"),
    ('["worker"]', "not a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', '"worker" list'),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "ps", "index": 0}}', '"type": "worker"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "lists 2 address"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "0"}}', "whole number"),
    # These reached TensorFlow: a traceback (the port, two chiefs) or a worker waiting forever (the "ps" task).
    ('{"cluster": {"worker": ["a:abc"]}, "task": {"type": "worker", "index": 0}}', "a port from 1 to 65535"),
    ('{"cluster": {"worker": ["a:"]}, "task": {"type": "worker", "index": 0}}', "a port from 1 to 65535"),
    ('{"cluster": {"worker": ["a:8\u00b2"]}, "task": {"type": "worker", "index": 0}}', "a port from 1 to 65535"),
    ('{"cluster": {"worker": ["a:1"], "chief": "b:2"}, "task": {"type": "chief", "index": 0}}', '"chief" must be'),
    ('{"cluster": {"worker": ["a:1"], "chief": ["b:2", "c:3"]}, "task": {"type": "chief", "index": 0}}',
     "at most one chief"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "lists 'ps'"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "a:1 is listed for more"),
])
def test_malformed_tf_config_names_the_problem_and_the_value(text, problem):
    with pytest.raises(UserError, match="TF_CONFIG is malformed") as raised:
        parse_tf_config(text)
    assert problem in str(raised.value) and f"Received: TF_CONFIG={text!r}" in str(raised.value)


def test_tf_config_of_a_two_worker_cluster():
    task = parse_tf_config(json.dumps(TWO_WORKERS))
    assert task.workers == ("127.0.0.1:20001", "127.0.0.1:20002") and task.task_index == 1 and not task.is_chief
    assert parse_tf_config(json.dumps(TWO_WORKERS | {"task": {"type": "worker", "index": 0}})).is_chief


def test_with_a_chief_task_only_the_chief_writes_the_run():
    cluster = {"chief": ["a:1"], "worker": ["b:2", "c:3"]}
    roles = {(kind, index): parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))
             for kind, index in (("chief", 0), ("worker", 0), ("worker", 1))}
    assert [task.is_chief for task in roles.values()] == [True, False, False]
    assert len(roles["chief", 0].workers) == 3


def test_mirrored_with_one_device_runs_one_replica_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="app.distribution"):
        distribution = resolve_distribution("mirrored", batch_size=4, training_strategy="finetune")
    assert distribution.info.to_metadata() == {"strategy": "mirrored", "replicas": 1, "workers": 1}
    assert "only one device" in caplog.text and "1 replica" in caplog.text and ENV_VAR in caplog.text


def test_global_batches_must_give_every_replica_whole_work():
    check_batch_sizes(2, batch_size=2, meta_batch_size=4)
    with pytest.raises(UserError, match="at least 4. Received: --batch-size 3"):
        check_batch_sizes(4, batch_size=3)
    with pytest.raises(UserError, match="multiple of the 2 replicas.*Received: --meta-batch-size 3.*--meta-batch-size 2"):
        check_batch_sizes(2, batch_size=8, meta_batch_size=3)


def test_a_resume_on_more_replicas_than_its_batch_says_what_can_be_done():
    """--resume takes no --batch-size: the refusal must not advise one (it did), but fewer devices or a new run."""
    with pytest.raises(UserError) as raised:
        check_batch_sizes(3, batch_size=2, resume_dir="/runs/r")
    message = str(raised.value)
    assert "Received: --resume /runs/r on 3 replicas" in message and "METATUNE_CPU_DEVICES=2" in message
    assert "--config /runs/r/config.json --batch-size 3 --output NEW_DIR" in message
    assert "Pass --batch-size" not in message


def test_bad_cpu_device_count_is_one_error_line(capsys, monkeypatch):
    assert requested_cpu_devices(None) == requested_cpu_devices(" ") == requested_cpu_devices("1") == 1
    assert requested_cpu_devices("4") == 4
    monkeypatch.setenv(ENV_VAR, "two")
    monkeypatch.setattr(app.cli, "_environment_problem", None)
    app.cli.prepare_environment(splits_batches=True)  # TensorFlow is already imported: only the value is checked
    assert train.main(["anything"]) == 2
    _one_error_line(capsys, f"{ENV_VAR} must be a whole number", "Received: METATUNE_CPU_DEVICES='two'")


def test_onednn_is_off_where_a_replica_on_the_cpu_can_get_an_empty_batch():
    """TensorFlow 2.21's oneDNN Conv2D returns an empty batch's input unchanged (the next layer then fails):
    off for several logical CPUs and for multi-worker jobs, before TensorFlow is imported; a user's own
    choice stays; one device keeps it on."""
    cases = (({ENV_VAR: "3"}, True, "0"), ({"TF_CONFIG": json.dumps(TWO_WORKERS)}, True, "0"),
             ({ENV_VAR: "3", ONEDNN_VAR: "1"}, False, "1"), ({}, False, None), ({ENV_VAR: "1"}, False, None),
             ({ENV_VAR: "two"}, False, None))
    for environ, turned_off, expected in cases:
        environ = dict(environ)
        assert avoid_onednn_for_split_batches(environ) is turned_off, environ
        assert environ.get(ONEDNN_VAR) == expected, environ


# Imports each entry script afresh and prints the TF_ENABLE_ONEDNN_OPTS each one leaves for TensorFlow. The
# TensorFlow import (and the CPU split that needs it) is stubbed out: the variable is decided before it, and
# four real imports would cost seconds each.
_ONEDNN_PER_ENTRY_POINT = """
import importlib, json, os, sys
import app.cli, app.cpu_devices
app.cli.import_tensorflow_quietly = lambda: None
app.cpu_devices.split_cpu_from_environment = lambda: None
seen = {}
for name in ("train", "evaluate", "predict", "export"):
    os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
    sys.modules.pop(name, None)
    importlib.import_module(name)
    seen[name] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
assert "tensorflow" not in sys.modules
print(json.dumps(seen))
"""


@pytest.mark.parametrize("environ", [{ENV_VAR: "2"}, {"TF_CONFIG": json.dumps(TWO_WORKERS)}])
def test_only_train_turns_onednn_off(environ):
    """Only train.py splits a batch across replicas (a tf.distribute strategy); evaluate.py, predict.py and
    export.py build none and run every batch whole on one device, so they keep oneDNN (it is faster) under
    the same METATUNE_CPU_DEVICES / TF_CONFIG."""
    env = {key: value for key, value in os.environ.items() if key not in (ENV_VAR, "TF_CONFIG", ONEDNN_VAR)}
    result = subprocess.run([sys.executable, "-c", _ONEDNN_PER_ENTRY_POINT], cwd=ROOT, env={**env, **environ},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"train": "0", "evaluate": None, "predict": None, "export": None}


@pytest.mark.slow  # a fresh TensorFlow process
def test_mirrored_over_two_logical_cpus_matches_one_device_and_trains_runs():
    """METATUNE_CPU_DEVICES=2 in one fresh process (tests/distributed_parity.py): 2 logical CPUs, 2 replicas;
    the head on features and finetune phase 2 (BatchNorm frozen) reach the same weights after a few steps as
    without a strategy (float tolerance); train.py --distribute mirrored trains linear and finetune and records
    2 replicas; a too-small global batch and a meta strategy are refused."""
    env = {**os.environ, ENV_VAR: "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "distributed_parity.py")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cpu_devices"] == 2 and report["replicas"] == 2
    assert report["info"] == {"strategy": "mirrored", "replicas": 2, "workers": 1}
    for part in ("head", "finetune"):
        assert report[part]["trained_distance"] > 1e-2, part  # the steps moved the weights ...
        assert report[part]["difference"] < 1e-5, part  # ... to the same place with and without the strategy
    assert report["finetune"]["moving_statistics_moved"] == 0.0  # BatchNorm frozen under the strategy too
    two_replicas = {"strategy": "mirrored", "replicas": 2, "workers": 1}
    assert report["runs"] == {"linear": two_replicas, "finetune": two_replicas, "linear_empty_share": two_replicas}, \
        result.stderr[-3000:]
    assert "at least 2. Received: --batch-size 1" in report["too_small_batch"]
    assert "does not support --strategy protonet" in report["meta_refused"]


def test_multi_worker_needs_the_same_output_on_every_worker(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(TWO_WORKERS))
    assert train.main([str(tmp_path), "--distribute", "multi-worker"]) == 2
    _one_error_line(capsys, "distribute multi-worker needs --output RUN_DIR", "Received: distribute='multi-worker'")
    assert not any(tmp_path.iterdir())
