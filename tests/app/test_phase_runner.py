"""The public phase runner: one PhaseSpec in, the model compiled and fit, its checkpoints typed."""

import keras
import numpy as np
import tensorflow as tf

from app.checkpoints import Checkpoints
from app.config import TrainConfig
from app.phases import HEAD, CompileSpec, PhaseContext, PhaseSpec, run_phase


def _spec(model: keras.Model) -> PhaseSpec:
    features = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    labels = (features[:, 0] > 0).astype("int32")
    batches = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4)
    compile_spec = CompileSpec(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(), ["accuracy"])
    return PhaseSpec(HEAD, 1, model, compile_spec, batches, batches, max_epochs=3, epoch_offset=2, step_offset=10,
                     selection={"epochs": {HEAD: 1}})


def test_run_phase_compiles_fits_and_records_its_spec_in_the_checkpoint_state(tmp_path):
    config = TrainConfig(data_dir=str(tmp_path), patience=5)
    context = PhaseContext(config, tmp_path / "logs", Checkpoints(tmp_path), ["a", "b"])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    spec = _spec(model)

    result = run_phase(context, spec)

    assert model.optimizer is spec.compile.optimizer and model.optimizer.iterations.numpy() == 6
    assert (result.epochs, result.steps_per_epoch) == (3, 2)
    assert [(e["epoch"], e["phase_epoch"]) for e in context.history] == [(3, 1), (4, 2), (5, 3)]  # after the offset
    resume = context.checkpoints.latest()
    state = resume.state
    assert state.done and (state.phase, state.epoch, state.epoch_offset, state.step_offset) == (HEAD, 3, 2, 10)
    assert state.selection == spec.selection and state.history == context.history

    # Resumed after the phase's end: nothing trains again, the phase reports what it had done.
    resumed = PhaseContext(config, tmp_path / "logs", Checkpoints(tmp_path), ["a", "b"], list(state.history), resume)
    again = run_phase(resumed, _spec(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])))
    assert (again.epochs, again.best_epoch, again.steps_per_epoch) == (3, result.best_epoch, 2)
    assert resumed.history == context.history
