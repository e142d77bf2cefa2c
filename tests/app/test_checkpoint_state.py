"""A checkpoint's state.json as a typed contract: round trip, earlier states, refusal of garbage."""

import json

import pytest

from app.checkpoint_state import CheckpointState
from app.errors import UserError

# A head-phase state as earlier versions wrote it: best_weights written as null, no steps_per_epoch.
OLD_STYLE = {"phase": "head", "epoch": 2, "history": [{"epoch": 1, "phase": "head"}, {"epoch": 2, "phase": "head"}],
             "early_stopping": {"wait": 0, "best": 0.5, "best_epoch": 1}, "best_weights": None,
             "epoch_offset": 0, "step_offset": 0}


def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path):
    state = CheckpointState("refit_finetune", 3, [{"epoch": 1}], done=True,
                            early_stopping={"wait": 1, "best": 0.25, "best_epoch": 2}, best_weights="b.weights.npz",
                            steps_per_epoch=4, epoch_offset=5, step_offset=20, selection={"epochs": {"head": 2}},
                            extra={"replicas": 2})
    path = tmp_path / "state.json"
    path.write_text(state.to_json())
    assert CheckpointState.read(path) == state
    assert json.loads(path.read_text())["replicas"] == 2


def test_defaults_are_left_out_of_the_file():
    assert CheckpointState("head", 1, []).to_dict() == {"phase": "head", "epoch": 1, "history": []}


def test_a_state_of_an_earlier_version_loads(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(OLD_STYLE))
    state = CheckpointState.read(path)
    assert (state.phase, state.epoch, state.done, state.best_weights, state.steps_per_epoch) == ("head", 2, False,
                                                                                                 None, None)
    assert state.history == OLD_STYLE["history"] and state.early_stopping["best_epoch"] == 1


@pytest.mark.parametrize("text, named", [
    ("{not json", "damaged"),
    ("[1, 2]", "not a checkpoint state"),
    (json.dumps({"phase": "head", "epoch": 1}), "not a checkpoint state"),
    (json.dumps({"phase": "head", "epoch": "one", "history": []}), "Received: phase='head', epoch='one'"),
])
def test_garbage_is_refused_with_one_message_naming_the_file(tmp_path, text, named):
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(UserError, match=named) as error:
        CheckpointState.read(path)
    assert str(path) in str(error.value)
