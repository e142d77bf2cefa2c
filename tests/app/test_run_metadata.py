"""metadata.json as a typed contract: round trip, runs of earlier versions, refusal of garbage."""

import json

import pytest

from app import run_dir as rd
from app.errors import UserError
from app.run_metadata import RunMetadata

# What a run written before class_digest, calibration, refit and unknown existed holds (format 1, 2026-10).
OLD_STYLE = {
    "format_version": 1,
    "class_names": ["cat", "dog"],
    "modality": "image",
    "input_spec": {"kind": "image", "image_size": [32, 32], "channels": 3, "dtype": "uint8"},
    "backbone": "efficientnet_lite0",
    "weights": "pretrained",
    "strategy": "linear",
    "metrics": {"val_accuracy": 0.5, "val_loss": 0.7, "epochs_trained": 3, "wall_time_s": 1.0},
    "data_dir": "/data/pets",
    "seed": 0,
    "versions": {"keras": "3.5.0"},
    "created": "2026-10-01T00:00:00+00:00",
}


def _full() -> RunMetadata:
    return RunMetadata(
        class_names=["a", "b", "c"], modality="text",
        input_spec={"kind": "text", "dtype": "string", "sequence_length": 16}, backbone="tiny_text",
        weights="none", backbone_run={"path": "/runs/x", "strategy": "linear"}, strategy="protonet",
        class_digest="ab" * 32, metrics={"val_accuracy": 1.0}, calibration={"temperature": 1.5, "fitted_on": "v"},
        precision="float32", distribute={"strategy": "mirrored", "replicas": 2, "workers": 1},
        meta={"algorithm": "protonet", "ways": 3}, refit={"applied": True, "reason": "r"},
        unknown={"score": "msp", "threshold": 0.2}, resumed=True, data_dir="/d", manifest_sha256="cd" * 32, seed=3,
        versions={"keras": "3.15.1"}, created="2026-12-05T00:00:00+00:00",
        extra={"sharding": {"mesh": [2, 1]}})


def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path):
    written = _full()
    written.write(tmp_path)
    on_disk = json.loads((tmp_path / rd.METADATA_FILE).read_text())
    assert list(on_disk)[:3] == ["format_version", "class_names", "modality"]
    assert on_disk["distribute"] == {"strategy": "mirrored", "replicas": 2, "workers": 1}
    assert on_disk["sharding"] == {"mesh": [2, 1]}  # a newer version's key survives
    read = RunMetadata.read(tmp_path)
    assert read == written
    assert (read.input_size, read.image_size, read.temperature, read.refit_applied) == (16, None, 1.5, True)


def test_optional_sections_a_run_lacks_are_left_out_of_the_file(tmp_path):
    metadata = RunMetadata(["a", "b"], "image", {"kind": "image", "image_size": [8, 8]})
    assert not {"meta", "backbone_run"} & set(metadata.to_dict())
    assert (metadata.input_size, metadata.image_size, metadata.resize) == (8, (8, 8), "stretch")


def test_a_run_of_an_earlier_version_loads_with_defaults(tmp_path):
    (tmp_path / rd.METADATA_FILE).write_text(json.dumps(OLD_STYLE))
    metadata = RunMetadata.read(tmp_path)
    assert metadata.class_names == ["cat", "dog"] and metadata.strategy == "linear"
    assert metadata.class_digest is None and metadata.temperature is None and not metadata.refit_applied
    assert metadata.meta is None and metadata.unknown is None and metadata.extra == {}
    assert metadata.to_dict().items() >= OLD_STYLE.items()  # written back, nothing it had is lost


@pytest.mark.parametrize("change, named", [
    ({"class_names": "cat"}, "class_names"),
    ({"class_names": ["cat", "cat"]}, "repeats"),
    ({"modality": "audio"}, "modality"),
    ({"input_spec": None}, "input_spec"),
    ({"input_spec": {"kind": "image"}}, "input size"),
    # Each was a traceback when a tool read the size or resized (export.py, predict.py, evaluate.py).
    ({"input_spec": {"kind": "image", "image_size": [32]}}, "input size"),
    ({"input_spec": {"kind": "image", "image_size": 32}}, "input size"),
    ({"input_spec": {"kind": "image", "image_size": [32, 0]}}, "input size"),
    ({"input_spec": {"kind": "image", "image_size": [32, 32], "resize": "zoom"}}, "resize must be one of"),
    ({"modality": "text", "input_spec": {"kind": "text", "sequence_length": [16]}}, "input size"),
    ({"metrics": [0.5]}, "metrics"),
    ({"seed": "zero"}, "seed"),
    # A string was a traceback in evaluate.py; 0, a negative or NaN divided the logits into garbage with exit 0.
    ({"calibration": {"temperature": "0.5"}}, "temperature must be a positive number"),
    ({"calibration": {"temperature": 0}}, "temperature must be a positive number"),
    ({"calibration": {"temperature": -1.0}}, "temperature must be a positive number"),
    ({"calibration": {"temperature": float("nan")}}, "temperature must be a positive number"),
    ({"calibration": {"temperature": True}}, "temperature must be a positive number"),
])
def test_garbage_is_refused_with_one_message_naming_the_field(tmp_path, change, named):
    (tmp_path / rd.METADATA_FILE).write_text(json.dumps(OLD_STYLE | change))
    with pytest.raises(UserError, match=named) as error:
        RunMetadata.read(tmp_path)
    assert rd.METADATA_FILE in str(error.value) and "Train the run again" in str(error.value)


def test_a_file_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / rd.METADATA_FILE).write_text("[1, 2]")
    with pytest.raises(UserError, match="holds list, not an object"):
        RunMetadata.read(tmp_path)
