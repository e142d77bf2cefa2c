"""A real TensorBoard server (the installed package, on a free loopback port) serves what a run wrote."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
import train

pytestmark = pytest.mark.slow  # starts a server process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, data: bytes | None = None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    data = root / "data"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["circle", "square", "stripe"]):
        for i in range(8):
            (data / name).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8) + np.uint8(60 * c)
            Image.fromarray(pixels).save(data / name / f"{i}.png")
    run = root / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "4", "--hidden-units", "8",
                       "--output", str(run)]) == 0
    assert evaluate.main([str(run), str(data), "--name", "own"]) == 0
    return run


@pytest.fixture(scope="module")
def server(finished_run):
    port = _free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(finished_run / "logs"),
         "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                if {"train", "validation"} <= set(_get(f"{base}/data/runs")):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("TensorBoard did not serve the run within 60 s")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_scalars_are_served_under_the_documented_tags(server):
    tags = _get(f"{server}/data/plugin/scalars/tags")
    assert {"epoch_loss", "epoch_accuracy", "learning_rate", "epoch_learning_rate"} <= set(tags["train"])
    assert {"epoch_loss", "epoch_accuracy"} <= set(tags["validation"])
    points = _get(f"{server}/data/plugin/scalars/scalars?run=train&tag=learning_rate")
    assert len(points) >= 4 and all(p[2] > 0 for p in points)  # one per optimizer step


def test_images_confusion_matrix_per_epoch_and_mistakes(server):
    tags = _get(f"{server}/data/plugin/images/tags")
    assert {"confusion_matrix", "worst_mistakes"} <= set(tags["validation"])
    assert "sample_inputs" in tags["train"]
    steps = _get(f"{server}/data/plugin/images/images?run=validation&tag=confusion_matrix")
    assert len(steps) == 4  # one per epoch


def test_hparams_experiment_lists_this_runs_config(server):
    experiment = _get(f"{server}/data/plugin/hparams/experiment", json.dumps({"experimentName": ""}).encode())
    names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"backbone", "learning_rate", "batch_size", "hidden_units", "seed"} <= names
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"epoch_accuracy", "final/val_accuracy"} <= metrics


def test_text_and_projector(server):
    assert {"config", "data_report"} <= set(_get(f"{server}/data/plugin/text/tags")["."])
    info = _get(f"{server}/data/plugin/projector/info?run=.")
    embedding = info["embeddings"][0]
    assert embedding["tensorShape"][1] == 8  # the hidden layer: the penultimate layer of the head
    assert embedding["sprite"]["singleImageDim"] == [32, 32]


def test_generated_pngs_open_with_expected_sizes(finished_run):
    out = finished_run / "eval" / "own"
    with Image.open(out / "confusion_matrix.png") as image:
        assert image.format == "PNG" and image.size[0] > 2 * image.size[1] * 0.8  # two panels side by side
    with Image.open(out / "reliability.png") as image:
        assert image.size == (550, 650)
    with Image.open(finished_run / "logs" / "sprite.png") as image:
        assert image.size[0] == image.size[1] and image.size[0] % 32 == 0
    lines = (out / "misclassified.csv").read_text().splitlines()
    assert lines[0] == "file,true,predicted,confidence"
