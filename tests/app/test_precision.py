"""--precision: which dtype policy a run gets on which hardware (GPUs simulated by injection)."""

import logging

import keras
import pytest

from app.errors import UserError
from app.precision import apply_precision, resolve_precision, visible_gpus

NO_GPU = []
V100 = [("Tesla V100", (7, 0))]
A100 = [("A100", (8, 0))]
P100 = [("Tesla P100", (6, 0))]


@pytest.fixture(autouse=True)
def float32_afterwards():
    yield
    keras.mixed_precision.set_global_policy("float32")  # never leak a mixed policy into other tests


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="app.precision")
    return caplog


@pytest.mark.parametrize("requested,gpus,expected", [
    ("float32", A100, "float32"),
    ("auto", NO_GPU, "float32"),
    ("auto", P100, "float32"),
    ("auto", V100, "mixed_float16"),
    ("auto", A100, "mixed_float16"),  # bfloat16 is never chosen automatically
    ("auto", [("H100", (9, 0))], "mixed_float16"),
    ("auto", A100 + P100, "float32"),  # the weakest GPU decides
    ("mixed_float16", V100, "mixed_float16"),
    ("mixed_float16", P100, "float32"),
    ("mixed_bfloat16", A100, "mixed_bfloat16"),
    ("mixed_bfloat16", V100, "float32"),
    ("mixed_float16", NO_GPU, "float32"),
    ("mixed_bfloat16", NO_GPU, "float32"),
])
def test_resolved_policy(requested, gpus, expected):
    assert resolve_precision(requested, gpus=gpus) == expected


def test_auto_on_cpu_says_mixed_precision_stays_off(logs):
    assert resolve_precision("auto", gpus=NO_GPU) == "float32"
    [record] = logs.records
    assert record.levelno == logging.INFO and "CPU" in record.getMessage()


def test_explicit_mixed_on_cpu_warns_why(logs):
    assert resolve_precision("mixed_float16", gpus=NO_GPU) == "float32"
    [record] = logs.records
    assert record.levelno == logging.WARNING
    assert "mixed_float16" in record.getMessage() and "CPU" in record.getMessage() and "slow" in record.getMessage()


def test_explicit_mixed_on_an_old_gpu_warns_with_the_capabilities(logs):
    assert resolve_precision("mixed_bfloat16", gpus=V100) == "float32"
    [record] = logs.records
    assert record.levelno == logging.WARNING and "8.0" in record.getMessage() and "7.0" in record.getMessage()


def test_unknown_capability_auto_stays_float32_but_an_explicit_request_is_trusted():
    assert resolve_precision("auto", gpus=[("gpu", None)]) == "float32"
    assert resolve_precision("mixed_float16", gpus=[("gpu", None)]) == "mixed_float16"


def test_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="Received: precision='half'"):
        resolve_precision("half", gpus=NO_GPU)


def test_apply_sets_the_global_policy():
    assert apply_precision("auto", gpus=V100) == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert apply_precision("float32") == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_real_device_query_returns_name_and_capability_pairs():
    gpus = visible_gpus()
    assert all(isinstance(name, str) for name, _ in gpus)
    if not gpus:  # this machine: a CPU
        assert apply_precision("auto") == "float32"
