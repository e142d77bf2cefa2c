"""Bug-bash of --distribute's inputs: METATUNE_CPU_DEVICES and TF_CONFIG values that were taken silently
and then misbehaved (a typo split the CPU into 20 devices; an address with a blank or a scheme left the
worker waiting forever), and the line a worker now logs before TensorFlow's silent wait for its peers."""

from __future__ import annotations

import json
import logging
import re

import pytest
import tensorflow as tf
from tensorflow.python.eager import context

import app.distribution
from app.cpu_devices import ENV_VAR, requested_cpu_devices
from app.distribution import multi_worker_strategy, parse_tf_config
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


class _Context:
    def configure_coordination_service(self, **kwargs):
        pass


def test_a_worker_says_what_it_waits_for_before_the_silent_wait(monkeypatch, caplog):
    """A worker whose peer never starts waits inside the strategy's constructor, silent, with Ctrl-C and
    SIGTERM unheard (TensorFlow keeps Python's lock); it showed nothing at all. The line before the wait names
    the cluster and how to stop it. (Stubs: this process's TensorFlow runtime must not become a worker.)"""
    cluster = {"cluster": {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    monkeypatch.setattr(context, "context", lambda: _Context())

    def waits_forever(**kwargs):
        assert "waiting for every task of TF_CONFIG" in caplog.text  # logged before the wait begins
        raise RuntimeError("stands for the wait")

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", waits_forever)
    with caplog.at_level(logging.INFO, logger=app.distribution.__name__), pytest.raises(RuntimeError):
        multi_worker_strategy(parse_tf_config(json.dumps(cluster)))
    assert "127.0.0.1:20001, 127.0.0.1:20002" in caplog.text and "kill -9" in caplog.text


def test_a_cpu_split_that_multi_worker_does_not_use_is_said(monkeypatch, caplog):
    """METATUNE_CPU_DEVICES=2 with a one-worker TF_CONFIG trained on 1 replica without a word (measured)."""
    cluster = {"cluster": {"worker": ["127.0.0.1:20001"]}, "task": {"type": "worker", "index": 0}}

    class OneReplica:
        num_replicas_in_sync = 1

    monkeypatch.setattr(app.distribution, "multi_worker_strategy", lambda cluster: OneReplica())
    environ = {"TF_CONFIG": json.dumps(cluster), ENV_VAR: "2"}
    with caplog.at_level(logging.WARNING, logger=app.distribution.__name__):
        distribution = app.distribution.resolve_distribution("multi-worker", 4, environ=environ)
    assert distribution.info.to_metadata() == {"strategy": "multi-worker", "replicas": 1, "workers": 1}
    assert f"{ENV_VAR}=2 has no effect under --distribute multi-worker" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=app.distribution.__name__):
        app.distribution.resolve_distribution("multi-worker", 4, environ={"TF_CONFIG": json.dumps(cluster)})
    assert "has no effect" not in caplog.text
