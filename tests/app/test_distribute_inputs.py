"""Bug-bash of --distribute's inputs: METATUNE_CPU_DEVICES and TF_CONFIG values that were taken silently
and then misbehaved (a typo split the CPU into 20 devices; an address with a blank or a scheme left the
worker waiting forever), and the wait for the other tasks, which was TensorFlow's, silent and endless (app/worker_rendezvous.py)."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time

import pytest

import app.distribution
from app import worker_rendezvous
from app.cpu_devices import ENV_VAR, requested_cpu_devices
from app.distribution import parse_tf_config
from app.errors import UserError


@pytest.mark.parametrize("value", ["2_0", "\u0662", "+2", "1.5", "0", "-1", "65", "abc"])
def test_cpu_devices_must_be_plain_digits(value):
    """int() read "2_0" as 20 and an Arabic-Indic 2 as 2: a typo silently became 20 replicas."""
    with pytest.raises(ValueError, match=re.escape(f"Received: {ENV_VAR}={value!r}")):
        requested_cpu_devices(value)


def test_cpu_devices_with_blanks_around_a_count_still_work():
    assert requested_cpu_devices(" 2 ") == 2 and requested_cpu_devices("64") == 64 and requested_cpu_devices("") == 1


@pytest.mark.parametrize("address", [" 127.0.0.1:2222", "127.0.0.1 :2222", "grpc://127.0.0.1:2222",
                                     "http://host1:2222"])
def test_an_address_with_a_blank_or_a_scheme_is_malformed(address):
    """These passed, and TensorFlow's server listened on the port alone, then waited silently (and deaf to
    Ctrl-C) for a peer at an address nothing answers: measured, killed after 7 minutes with kill -9."""
    text = json.dumps({"cluster": {"worker": [address]}, "task": {"type": "worker", "index": 0}})
    with pytest.raises(UserError, match="TF_CONFIG is malformed") as raised:
        parse_tf_config(text)
    assert "no blanks or scheme" in str(raised.value) and f"Received: TF_CONFIG={text!r}" in str(raised.value)


@pytest.mark.parametrize("address", ["127.0.0.1:2222", "localhost:2222", "[::1]:2222", "host-1.example.com:2222"])
def test_plain_addresses_stay_accepted(address):
    text = json.dumps({"cluster": {"worker": [address]}, "task": {"type": "worker", "index": 0}})
    assert parse_tf_config(text).address == address


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_task_that_never_starts_ends_the_wait_with_one_error_naming_it(caplog):
    """A worker whose peer was never started waited forever inside the strategy's constructor: silent, deaf to
    Ctrl-C and SIGTERM (TensorFlow holds Python's lock), only kill -9 stopped it. The wait is now Python's: it says
    whom it waits for, and ends at its limit with a UserError naming the missing task and why it does not answer."""
    own, absent = _free_port(), _free_port()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger=worker_rendezvous.__name__), \
            pytest.raises(UserError, match="1 of the 1 other task") as raised:
        worker_rendezvous.wait_for_tasks(own, {"worker 1": f"127.0.0.1:{absent}"}, limit_s=1.5)
    assert 1.5 <= time.monotonic() - started < 10
    assert f"worker 1 at 127.0.0.1:{absent} (Connection refused)" in str(raised.value)
    assert worker_rendezvous.WAIT_ENV in str(raised.value)
    assert f"waiting for worker 1 at 127.0.0.1:{absent}" in caplog.text and "Ctrl-C stops this worker" in caplog.text
    with socket.create_server(("127.0.0.1", own)):  # the port is free again for TensorFlow's server
        pass


def test_tasks_that_answer_end_the_wait_and_each_task_listens_while_it_waits():
    """Two tasks waiting for each other (threads here, processes in a job) both go on as soon as both listen. The
    first to go on takes its port for TensorFlow's server (a listener here) while the other may still knock."""
    ports = [_free_port(), _free_port()]
    errors, servers = [], []

    def task(index: int) -> None:
        try:
            worker_rendezvous.wait_for_tasks(ports[index], {f"worker {1 - index}": f"127.0.0.1:{ports[1 - index]}"},
                                             limit_s=20)
            servers.append(socket.create_server(("127.0.0.1", ports[index])))  # what TensorFlow's server does
        except Exception as error:  # noqa: BLE001  reported by the assertion below
            errors.append(error)

    first = threading.Thread(target=task, args=(0,))
    first.start()
    time.sleep(1.0)  # the second task starts later, as a worker started by hand does
    started = time.monotonic()
    task(1)
    first.join(timeout=20)
    for server in servers:
        server.close()
    assert not first.is_alive() and errors == [] and len(servers) == 2 and time.monotonic() - started < 10


def test_a_taken_port_is_an_os_error_and_no_other_task_means_no_wait():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            worker_rendezvous.wait_for_tasks(port, {"worker 1": "127.0.0.1:1"}, limit_s=5)
        worker_rendezvous.wait_for_tasks(port, {}, limit_s=5)  # a one-task cluster: TensorFlow reports its port


@pytest.mark.parametrize("value, expected", [(None, 900), ("", 900), (" 30 ", 30.0), ("2.5", 2.5)])
def test_the_wait_limit_comes_from_the_environment(value, expected):
    environ = {} if value is None else {worker_rendezvous.WAIT_ENV: value}
    assert worker_rendezvous.wait_limit(environ) == expected


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "inf", "1e9"])
def test_a_wait_limit_that_is_not_a_positive_time_is_refused(value):
    with pytest.raises(UserError, match=re.escape(f"Received: {worker_rendezvous.WAIT_ENV}={value!r}")):
        worker_rendezvous.wait_limit({worker_rendezvous.WAIT_ENV: value})


def test_the_other_tasks_are_named_as_tf_config_names_them():
    workers = {"cluster": {"worker": ["h:1", "h:2"], "chief": ["h:3"]}, "task": {"type": "worker", "index": 1}}
    assert parse_tf_config(json.dumps(workers)).others() == {"worker 0": "h:1", "chief": "h:3"}
    chief = workers | {"task": {"type": "chief", "index": 0}}
    assert parse_tf_config(json.dumps(chief)).others() == {"worker 0": "h:1", "worker 1": "h:2"}


def test_a_cpu_split_that_multi_worker_does_not_use_is_said(monkeypatch, caplog):
    """METATUNE_CPU_DEVICES=2 with a one-worker TF_CONFIG trained on 1 replica without a word (measured)."""
    cluster = {"cluster": {"worker": ["127.0.0.1:20001"]}, "task": {"type": "worker", "index": 0}}

    class OneReplica:
        num_replicas_in_sync = 1

    monkeypatch.setattr(app.distribution, "multi_worker_strategy", lambda cluster, wait_s: OneReplica())
    environ = {"TF_CONFIG": json.dumps(cluster), ENV_VAR: "2"}
    with caplog.at_level(logging.WARNING, logger=app.distribution.__name__):
        distribution = app.distribution.resolve_distribution("multi-worker", 4, environ=environ)
    assert distribution.info.to_metadata() == {"strategy": "multi-worker", "replicas": 1, "workers": 1}
    assert f"{ENV_VAR}=2 has no effect under --distribute multi-worker" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=app.distribution.__name__):
        app.distribution.resolve_distribution("multi-worker", 4, environ={"TF_CONFIG": json.dumps(cluster)})
    assert "has no effect" not in caplog.text
