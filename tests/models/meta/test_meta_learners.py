"""Meta-learning wrappers: hand-computed references for the outer gradients, Reptile's
meta step, inner-loop behaviour, BatchNorm induction, fit/evaluate/serialization, and
the second-order memory guard. Tiny models (features of dim 8, 3-way 2-shot 3-query)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.errors import ModelError
from models.meta import (
    ALGORITHMS,
    FOMAML,
    MAML,
    ProtoNet,
    Reptile,
    available_memory_bytes,
    build_meta_learner,
    check_maml_fits,
    cross_entropy,
    maml_memory_estimate,
    prototype_head_weights,
)

DIM, WAYS, SHOTS, QUERIES, TASKS = 8, 3, 2, 3, 2


def relu_embedding(seed=0, batch_norm=False, layers=1):
    inputs = keras.Input((DIM,))
    x = inputs
    for i in range(layers):
        x = keras.layers.Dense(16, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i), name=f"dense_{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=0.5, name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    return keras.Model(inputs, x, name="embedding")


def seeded_head(seed=7):
    return keras.layers.Dense(WAYS, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name="meta_head")


def make_episodes(count, tasks=TASKS, seed=0, separable=False):
    """count meta batches: ((support_x, support_y, query_x), query_y), each with T tasks."""
    rng = np.random.default_rng(seed)
    support_y = np.tile(np.repeat(np.arange(WAYS), SHOTS), (count, tasks, 1)).astype("int32")
    query_y = np.tile(np.repeat(np.arange(WAYS), QUERIES), (count, tasks, 1)).astype("int32")
    if separable:
        pool = rng.normal(scale=3.0, size=(8, DIM))
        classes = np.stack([[rng.choice(8, WAYS, replace=False) for _ in range(tasks)] for _ in range(count)])
        centers = pool[classes]  # [count, tasks, WAYS, DIM]
        support_x = np.take_along_axis(centers, support_y[..., None], axis=2) + rng.normal(scale=0.5, size=support_y.shape + (DIM,))
        query_x = np.take_along_axis(centers, query_y[..., None], axis=2) + rng.normal(scale=0.5, size=query_y.shape + (DIM,))
    else:
        support_x = rng.normal(size=support_y.shape + (DIM,))
        query_x = rng.normal(size=query_y.shape + (DIM,))
    return (support_x.astype("float32"), support_y, query_x.astype("float32")), query_y


def dataset(episodes):
    return tf.data.Dataset.from_tensor_slices(episodes)


def one_task(episodes, batch=0, task=0):
    (sx, sy, qx), qy = episodes
    return sx[batch, task], sy[batch, task], qx[batch, task], qy[batch, task]


def weights(learner):
    return [v.numpy().copy() for v in learner.meta_variables]


def ce(labels, logits):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits), axis=0)


def hand_logits(w, x):
    """The tiny net by hand: relu(x @ k1 + b1) @ k2 + b2, w = [k1, b1, k2, b2]."""
    return tf.nn.relu(x @ w[0] + w[1]) @ w[2] + w[3]


def hand_inner_loop(w, sx, sy, lr, steps, adapted, second_order=False):
    """Plain SGD on the support loss for the `adapted` entries of w."""
    fast = list(w)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch([fast[i] for i in adapted])
            loss = ce(sy, hand_logits(fast, sx))
        grads = tape.gradient(loss, [fast[i] for i in adapted])
        for i, g in zip(adapted, grads):
            fast[i] = fast[i] - lr * (g if second_order else tf.stop_gradient(g))
    return fast


# ------------------------------------------------------------------ MAML family
@pytest.mark.parametrize("adapt,adapted", [("all", [0, 1, 2, 3]), ("head", [2, 3])])
def test_fomaml_gradient_matches_hand_computed_reference(adapt, adapted):
    learner = FOMAML(relu_embedding(), WAYS, head=seeded_head(), adapt=adapt, inner_learning_rate=0.3, inner_steps=2)
    episodes = make_episodes(1)
    sx, sy, qx, qy = one_task(episodes)
    w = [tf.constant(v) for v in weights(learner)]
    fast = hand_inner_loop(w, sx, sy, 0.3, 2, adapted)
    with tf.GradientTape() as tape:
        tape.watch(fast)
        query_loss = ce(qy, hand_logits(fast, qx))
    reference = tape.gradient(query_loss, fast)

    loss, _, grads = learner.task_gradients(sx, sy, qx, qy, training=True)
    np.testing.assert_allclose(loss, query_loss, rtol=1e-5)
    for got, want in zip(grads, reference):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    # One fit step with SGD(lr=1) applies -mean over the T tasks of those gradients.
    per_task = []
    for t in range(TASKS):
        sx, sy, qx, qy = one_task(episodes, task=t)
        fast = hand_inner_loop(w, sx, sy, 0.3, 2, adapted)
        with tf.GradientTape() as tape:
            tape.watch(fast)
            query_loss = ce(qy, hand_logits(fast, qx))
        per_task.append([g.numpy() for g in tape.gradient(query_loss, fast)])
    learner.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    (sx, sy, qx), qy = episodes
    learner.train_on_batch((sx[0], sy[0], qx[0]), qy[0])
    for after, before, *task_grads in zip(weights(learner), [v.numpy() for v in w], *per_task):
        np.testing.assert_allclose(after, before - np.mean(task_grads, axis=0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("adapt,adapted", [("all", [0, 1, 2, 3]), ("head", [2, 3])])
def test_second_order_gradient_matches_reference_and_differs_from_first_order(adapt, adapted):
    episodes = make_episodes(1)
    sx, sy, qx, qy = one_task(episodes)
    maml = MAML(relu_embedding(), WAYS, head=seeded_head(), adapt=adapt, inner_learning_rate=0.5, inner_steps=2)
    fomaml = FOMAML(relu_embedding(), WAYS, head=seeded_head(), adapt=adapt, inner_learning_rate=0.5, inner_steps=2)
    for a, b in zip(maml.meta_variables, fomaml.meta_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    w = [tf.constant(v) for v in weights(maml)]
    with tf.GradientTape() as outer:
        outer.watch(w)
        fast = hand_inner_loop(w, sx, sy, 0.5, 2, adapted, second_order=True)
        query_loss = ce(qy, hand_logits(fast, qx))
    reference = outer.gradient(query_loss, w)

    _, _, second = maml.task_gradients(sx, sy, qx, qy, training=True)
    _, _, first = fomaml.task_gradients(sx, sy, qx, qy, training=True)
    for got, want in zip(second, reference):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert all(np.isfinite(g.numpy()).all() for g in second)
    difference = max(float(np.max(np.abs(s - f))) for s, f in zip(second, first))
    assert difference > 1e-4


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
def test_inner_steps_lower_the_support_loss(algorithm):
    learner = build_meta_learner(algorithm, relu_embedding(), WAYS, head=seeded_head(), adapt=1,
                                 inner_learning_rate=0.2, inner_steps=5)
    sx, sy, _, _ = one_task(make_episodes(1))
    params = learner.read_params()
    fast, losses = learner.adapt_params(params, sx, sy)
    final = float(cross_entropy(sy, learner.logits(fast, sx)))
    losses = [float(v) for v in losses]
    assert len(losses) == 5
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert final < losses[0] - 0.05
    # Adaptation is functional: the model's own weights did not move.
    for v, p in zip(learner.meta_variables, params):
        np.testing.assert_array_equal(v.numpy(), p.numpy())


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "protonet"])
@pytest.mark.parametrize("adapt", ["all", 1])
def test_every_adapted_variable_receives_a_gradient(algorithm, adapt):
    kwargs = {} if algorithm == "protonet" else {"adapt": adapt, "inner_steps": 2, "inner_learning_rate": 0.2}
    learner = build_meta_learner(algorithm, relu_embedding(layers=2), WAYS, **kwargs)
    _, _, grads = learner.task_gradients(*one_task(make_episodes(1)), training=True)
    adapted = learner.meta_variables if algorithm == "protonet" else learner.adapted_variables
    expected = 6 if (algorithm == "protonet" or adapt == "all") else 4  # (k, b) per Dense (+ head)
    assert len(adapted) == expected - (2 if algorithm == "protonet" else 0)
    ids = {id(v) for v in adapted}
    for variable, grad in zip(learner.meta_variables, grads):
        if id(variable) in ids:
            assert np.isfinite(grad.numpy()).all()
            assert np.abs(grad.numpy()).max() > 0, variable.path
        elif algorithm == "reptile":  # Reptile leaves the non-adapted variables alone
            assert np.abs(grad.numpy()).max() == 0
        else:  # MAML family: meta-updated only, still through the query loss
            assert np.abs(grad.numpy()).max() > 0, variable.path


def test_adapt_selects_layers_by_count_list_and_name():
    embedding = relu_embedding(layers=2)
    assert [l.name for l in MAML(embedding, WAYS, adapt="head").adapted_layers] == ["meta_head"]
    assert [l.name for l in MAML(embedding, WAYS, adapt=1).adapted_layers] == ["dense_1", "meta_head"]
    assert [l.name for l in MAML(embedding, WAYS, adapt="all").adapted_layers] == ["dense_0", "dense_1", "meta_head"]
    by_layer = MAML(embedding, WAYS, adapt=[embedding.get_layer("dense_0")])
    assert [l.name for l in by_layer.adapted_layers] == ["dense_0", "meta_head"]
    assert by_layer.get_config()["adapt"] == ["dense_0"]
    with pytest.raises(ValueError, match="nope"):
        MAML(embedding, WAYS, adapt=["nope"])
    with pytest.raises(ValueError, match="adapt="):
        MAML(embedding, WAYS, adapt="some")


# ----------------------------------------------------------------------- Reptile
def _reptile_after_one_step(step_size, path, adapt):
    kwargs = {"meta_step_size": step_size} if path == "direct" else {}
    learner = Reptile(relu_embedding(), WAYS, head=seeded_head(), adapt=adapt, inner_learning_rate=0.3, inner_steps=3, **kwargs)
    learner.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0 if path == "direct" else step_size))
    episodes = make_episodes(1, tasks=1)
    before = weights(learner)
    (sx, sy, qx), qy = episodes
    learner.train_on_batch((sx[0], sy[0], qx[0]), qy[0])
    return learner, before, episodes


@pytest.mark.parametrize("path", ["direct", "optimizer"])
def test_reptile_meta_step_zero_leaves_weights_unchanged(path):
    learner, before, _ = _reptile_after_one_step(0.0, path, "all")
    for after, want in zip(weights(learner), before):
        np.testing.assert_array_equal(after, want)


@pytest.mark.parametrize("path", ["direct", "optimizer"])
@pytest.mark.parametrize("adapt,adapted", [("all", [0, 1, 2, 3]), ("head", [2, 3])])
def test_reptile_meta_step_one_equals_the_adapted_weights(path, adapt, adapted):
    learner, before, episodes = _reptile_after_one_step(1.0, path, adapt)
    sx, sy, _, _ = one_task(episodes)
    # Independently: plain SGD on the support set with tf.Variables.
    variables = [tf.Variable(w) for w in before]
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = ce(sy, hand_logits(variables, sx))
        grads = tape.gradient(loss, variables)
        for i in adapted:
            variables[i].assign_sub(0.3 * grads[i])
    for after, want in zip(weights(learner), variables):
        np.testing.assert_allclose(after, want.numpy(), rtol=1e-5, atol=1e-6)


def test_reptile_minibatches_cycle_through_the_support_set():
    learner = Reptile(relu_embedding(), WAYS, inner_steps=4, inner_batch_size=4, seed=3)
    sx, sy, _, _ = one_task(make_episodes(1))
    batches = learner.inner_batches(tf.constant(sx), tf.constant(sy), 4)
    assert [int(tf.shape(y)[0]) for _, y in batches] == [4, 4, 4, 4]
    seen = np.concatenate([y.numpy() for _, y in batches[:2]])[:WAYS * SHOTS]  # 8 picks cover all 6 once first
    assert sorted(seen.tolist()) == sorted(sy.tolist())


# ---------------------------------------------------------------------- ProtoNet
def test_protonet_loss_decreases_on_separable_data():
    learner = ProtoNet(relu_embedding(), WAYS)
    learner.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01))
    held_out = dataset(make_episodes(4, seed=1, separable=True))
    before = learner.evaluate(held_out, verbose=0, return_dict=True)
    learner.fit(dataset(make_episodes(20, seed=2, separable=True)), epochs=1, verbose=0, shuffle=False)
    after = learner.evaluate(held_out, verbose=0, return_dict=True)
    assert after["loss"] < 0.8 * before["loss"]
    assert after["accuracy"] >= 0.9


def test_prototype_head_weights_reproduce_the_distance_softmax():
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(30, 6))
    labels = np.arange(30) % 4
    kernel, bias = prototype_head_weights(embeddings, labels, 4)
    assert kernel.shape == (6, 4) and bias.shape == (4,)
    protos = np.stack([embeddings[labels == c].mean(axis=0) for c in range(4)])
    queries = rng.normal(size=(10, 6))
    distance = ((queries[:, None, :] - protos[None]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(keras.ops.softmax(queries @ kernel + bias), keras.ops.softmax(-distance), rtol=1e-4, atol=1e-6)

    # The same as the ProtoNet's own logits on a task, through a Dense layer.
    learner = ProtoNet(relu_embedding(), WAYS)
    sx, sy, qx, qy = one_task(make_episodes(1))
    _, logits = learner.task_loss_and_logits(learner.read_params(), sx, sy, qx, qy, training=False)
    kernel, bias = prototype_head_weights(learner.embedding(sx).numpy(), sy, WAYS)
    dense = keras.layers.Dense(WAYS, activation="softmax")
    dense.build((None, 16))
    dense.set_weights([kernel, bias])
    np.testing.assert_allclose(dense(learner.embedding(qx)), keras.ops.softmax(logits), rtol=1e-4, atol=1e-6)
    with pytest.raises(ModelError, match=r"\[3\]"):
        prototype_head_weights(embeddings, labels % 3, 4)


# ---------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("algorithm", ["protonet", "maml"])
@pytest.mark.parametrize("transductive", [False, True])
def test_batchnorm_statistics_come_from_the_support_only(algorithm, transductive):
    (sx, sy, qx), qy = make_episodes(1, tasks=1)
    stats = []
    for shift in (0.0, 100.0):
        keras.utils.set_random_seed(0)
        learner = build_meta_learner(algorithm, relu_embedding(batch_norm=True), WAYS, transductive=transductive)
        assert learner.transductive is transductive
        learner.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
        learner.train_on_batch((sx[0], sy[0], qx[0] + shift), qy[0])
        bn = learner.embedding.get_layer("bn_0")
        stats.append((bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()))
        assert not np.allclose(stats[-1][0], 0.0)  # the support did update them
        learner.evaluate(dataset(make_episodes(1, tasks=1, seed=9)), verbose=0)
        np.testing.assert_array_equal(bn.moving_mean.numpy(), stats[-1][0])  # evaluation did not
    np.testing.assert_array_equal(stats[0][0], stats[1][0])
    np.testing.assert_array_equal(stats[0][1], stats[1][1])


@pytest.mark.parametrize("algorithm,adapt", [("maml", "all"), ("fomaml", "head"), ("reptile", "all")])
def test_evaluation_inner_loop_adapts_with_support_batch_statistics(algorithm, adapt):
    """At evaluation the inner loop still trains on the support: BatchNorm uses the
    support's batch statistics (what the inner learning rate was meta-learned with), so
    the adapted weights do not depend on the moving statistics, which stay untouched."""
    sx, sy, _, _ = one_task(make_episodes(1))
    learner = build_meta_learner(algorithm, relu_embedding(batch_norm=True), WAYS, adapt=adapt, inner_steps=2,
                                 inner_learning_rate=0.5)
    bn = learner.embedding.get_layer("bn_0")
    adapted = []
    for moving_mean in (0.0, 50.0):
        bn.moving_mean.assign(np.full(bn.moving_mean.shape, moving_mean, "float32"))
        fast, losses = learner.adapt_params(learner.read_params(), sx, sy, training=False)
        adapted.append([f.numpy() for f in fast])
        np.testing.assert_array_equal(bn.moving_mean.numpy(), moving_mean)  # evaluation writes nothing back
        assert float(losses[-1]) < float(losses[0])  # and the support loss still goes down
    for before, after in zip(*adapted):
        np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
def test_evaluation_adapts_with_eval_inner_steps_and_training_with_inner_steps(algorithm):
    """`eval_inner_steps` is the number of inner steps of every evaluation path (episode_logits,
    test_step); meta-training keeps `inner_steps`."""
    sx, sy, qx, qy = one_task(make_episodes(1))
    learner = build_meta_learner(algorithm, relu_embedding(), WAYS, head=seeded_head(), adapt="all",
                                 inner_learning_rate=0.3, inner_steps=1, eval_inner_steps=4)
    params = learner.read_params()

    def query_logits(steps):
        fast, _ = learner.adapt_params(params, sx, sy, steps=steps)
        return learner.logits(fast, qx).numpy()

    np.testing.assert_allclose(learner.episode_logits(sx, sy, qx).numpy(), query_logits(4), rtol=1e-5, atol=1e-6)
    _, logits = learner.task_loss_and_logits(params, sx, sy, qx, qy, training=True)
    np.testing.assert_allclose(logits.numpy(), query_logits(1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(query_logits(1), query_logits(4))
    learner.eval_inner_steps = None  # public: None falls back to inner_steps
    np.testing.assert_allclose(learner.episode_logits(sx, sy, qx).numpy(), query_logits(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="eval_inner_steps"):
        build_meta_learner(algorithm, relu_embedding(), WAYS, eval_inner_steps=0)


def test_protonet_ignores_classes_absent_from_the_support():
    """A ProtoNet meta-trained 20-way scores 5-way episodes exactly like a 5-way one:
    the 15 classes with no support example get no (zero-vector) prototype."""
    (sx, sy, qx), qy = make_episodes(1, tasks=1, seed=3, separable=True)
    embedding = relu_embedding()
    wide, narrow = ProtoNet(embedding, 20), ProtoNet(embedding, WAYS)
    loss_wide, logits_wide = wide.task_loss_and_logits(wide.read_params(), sx[0, 0], sy[0, 0], qx[0, 0], qy[0, 0], False)
    loss_narrow, logits_narrow = narrow.task_loss_and_logits(narrow.read_params(), sx[0, 0], sy[0, 0], qx[0, 0], qy[0, 0], False)
    np.testing.assert_allclose(logits_wide[:, :WAYS], logits_narrow, rtol=1e-5)
    assert np.all(logits_wide[:, WAYS:] <= -1e8)
    np.testing.assert_allclose(float(loss_wide), float(loss_narrow), rtol=1e-5)
    with tf.GradientTape() as tape:
        loss, _ = wide.task_loss_and_logits(wide.read_params(), sx[0, 0], sy[0, 0], qx[0, 0], qy[0, 0], True)
    grads = tape.gradient(loss, wide.meta_variables)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    wide.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    narrow.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    episodes = dataset(make_episodes(2, seed=4, separable=True))
    assert wide.evaluate(episodes, verbose=0, return_dict=True)["accuracy"] == pytest.approx(
        narrow.evaluate(episodes, verbose=0, return_dict=True)["accuracy"])


def test_transductive_query_uses_query_batch_statistics():
    sx, sy, qx, qy = one_task(make_episodes(1))
    learners = [ProtoNet(relu_embedding(batch_norm=True), WAYS, transductive=flag) for flag in (False, True)]
    logits = [l.task_loss_and_logits(l.read_params(), sx, sy, qx * 3 + 1, qy, training=True)[1] for l in learners]
    assert not np.allclose(logits[0], logits[1])


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
def test_support_statistics_normalise_each_query_like_the_support_and_alone(algorithm):
    """query_statistics="support" (MetaBN): a query is normalised with the support's batch statistics at
    the adapted weights, so the support classified as a query gets exactly its training-mode logits; a
    query's logits do not depend on the other queries (inductive), nor on the moving statistics, and
    nothing is written back."""
    sx, sy, qx, _ = one_task(make_episodes(1))
    learner = build_meta_learner(algorithm, relu_embedding(batch_norm=True, layers=2), WAYS, head=seeded_head(),
                                 adapt="all", inner_steps=2, inner_learning_rate=0.3, query_statistics="support")
    bn = learner.embedding.get_layer("bn_1")
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, 7.0, "float32"))
    fast, _ = learner.adapt_params(learner.read_params(), sx, sy)
    np.testing.assert_allclose(learner.query_logits(fast, sx, sx).numpy(),
                               learner.logits(fast, sx, training=True).numpy(), rtol=1e-4, atol=1e-4)
    alone = learner.query_logits(fast, sx, qx[:1]).numpy()
    np.testing.assert_allclose(learner.query_logits(fast, sx, qx).numpy()[:1], alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(learner.query_logits(fast, sx, np.concatenate([qx[:1], qx[1:] * 10 + 3])).numpy()[:1],
                               alone, rtol=1e-5, atol=1e-5)
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, -3.0, "float32"))
    np.testing.assert_allclose(learner.query_logits(fast, sx, qx[:1]).numpy(), alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), -3.0)
    moving = build_meta_learner(algorithm, learner.embedding, WAYS, head=learner.head, adapt="all")
    assert moving.query_statistics == "moving"
    assert not np.allclose(moving.query_logits(fast, sx, qx[:1]).numpy(), alone)  # the moving statistics' logits
    with pytest.raises(ValueError, match="query_statistics"):
        build_meta_learner(algorithm, relu_embedding(), WAYS, query_statistics="query")


def test_support_statistics_refused_for_a_batchnorm_that_never_updates():
    """Momentum 1 leaves the moving statistics unchanged, so the support's cannot be read from them: one clear
    error at construction, not NaN logits later. A frozen layer, or the moving statistics, are fine."""
    embedding = relu_embedding(batch_norm=True)
    embedding.get_layer("bn_0").momentum = 1.0
    with pytest.raises(ModelError, match=r"'bn_0' has momentum 1.0.*query_statistics='moving'"):
        build_meta_learner("fomaml", embedding, WAYS, query_statistics="support")
    assert build_meta_learner("fomaml", embedding, WAYS).query_statistics == "moving"
    embedding.get_layer("bn_0").trainable = False
    assert build_meta_learner("fomaml", embedding, WAYS, query_statistics="support").query_statistics == "support"


def test_a_learner_saved_before_query_statistics_loads_with_moving_statistics():
    learner = build_meta_learner("fomaml", relu_embedding(batch_norm=True), WAYS, query_statistics="support")
    config = learner.get_config()
    assert config["query_statistics"] == "support" and FOMAML.from_config(config).query_statistics == "support"
    del config["query_statistics"]
    assert FOMAML.from_config(config).query_statistics == "moving"


# ------------------------------------------------- fit, evaluate, serialization
ALGORITHM_KWARGS = {
    "protonet": {},
    "reptile": {"inner_steps": 3, "inner_batch_size": 4, "seed": 1, "adapt": "all"},
    "fomaml": {"adapt": 1, "inner_steps": 2},
    "maml": {"adapt": "all", "inner_steps": 2, "eval_inner_steps": 4},
}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_fit_with_early_stopping_evaluate_and_config_round_trip(algorithm, tmp_path):
    learner = build_meta_learner(algorithm, relu_embedding(), WAYS, **ALGORITHM_KWARGS[algorithm])
    learner.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3))
    train = dataset(make_episodes(3, seed=1, separable=True))
    if algorithm == "reptile":  # an unknown number of tasks per meta step works too
        train = train.unbatch().batch(TASKS)
        assert train.element_spec[1].shape[0] is None
    history = learner.fit(train, validation_data=dataset(make_episodes(2, seed=2, separable=True)), epochs=2,
                          verbose=0, shuffle=False, callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)])
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(np.isfinite(v).all() for v in history.history.values())
    test = dataset(make_episodes(2, seed=3, separable=True))
    result = learner.evaluate(test, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"} and 0.0 <= result["accuracy"] <= 1.0

    config = learner.get_config()
    clone = type(learner).from_config(config)
    assert clone.get_config() == config
    assert [v.shape for v in clone.meta_variables] == [v.shape for v in learner.meta_variables]
    if algorithm != "protonet":
        assert [l.name for l in clone.adapted_layers] == [l.name for l in learner.adapted_layers]

    path = tmp_path / "learner.keras"
    learner.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(learner)
    for a, b in zip(loaded.meta_variables, learner.meta_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3))
    if algorithm != "reptile":  # Reptile's minibatch shuffle draws new seeds
        np.testing.assert_allclose(loaded.evaluate(test, verbose=0, return_dict=True)["loss"], result["loss"], rtol=1e-5)


def test_raw_inputs_with_a_trainable_backbone_top():
    """Images through a conv backbone: frozen stem (BN in inference mode), trainable top adapts."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="top_conv")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="backbone")
    for layer in backbone.layers:
        layer.trainable = layer.name == "top_conv"
    learner = MAML(backbone, WAYS, adapt=["top_conv"], inner_steps=2, inner_learning_rate=0.1)
    assert [v.path for v in learner.adapted_variables] == [v.path for v in learner.meta_variables]
    assert len(learner.meta_variables) == 4  # top conv and head; the stem is neither adapted nor meta-trained
    frozen = [v.numpy().copy() for v in backbone.non_trainable_variables]

    rng = np.random.default_rng(0)
    (sx, sy, qx), qy = make_episodes(2)
    pixels = lambda like: rng.normal(size=like.shape[:3] + (8, 8, 1)).astype("float32")  # noqa: E731
    images = ((pixels(sx), sy, pixels(qx)), qy)
    learner.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2))
    before = weights(learner)
    learner.fit(dataset(images), epochs=1, verbose=0, shuffle=False)
    assert all(not np.array_equal(a, b) for a, b in zip(weights(learner), before))
    for v, want in zip(backbone.non_trainable_variables, frozen):
        np.testing.assert_array_equal(v.numpy(), want)  # stem and its BN statistics untouched
    assert learner.memory_estimate((WAYS * SHOTS, 8, 8, 1), (WAYS * QUERIES, 8, 8, 1)) > 0


def test_unknown_algorithm_and_bad_batches_are_clear_errors():
    with pytest.raises(ValueError, match="algorithm='anil'"):
        build_meta_learner("anil", relu_embedding(), WAYS)
    learner = ProtoNet(relu_embedding(), WAYS)
    with pytest.raises(ValueError, match="support_x, support_y, query_x"):
        learner.test_step((np.zeros((1, 6, DIM), "float32"), np.zeros((1, 6), "int32")))


# ----------------------------------------------------------------- memory guard
def test_maml_memory_refusal_mentions_fomaml(tmp_path):
    learner = MAML(relu_embedding(), WAYS, adapt="all", inner_steps=2)
    support_shape, query_shape = (WAYS * SHOTS, DIM), (WAYS * QUERIES, DIM)
    estimate = learner.memory_estimate(support_shape, query_shape)
    params = sum(int(np.prod(v.shape)) * 4 for v in learner.meta_variables)
    assert estimate > 3 * params  # θ plus two fast copies plus activations
    assert MAML(relu_embedding(), WAYS, adapt="all", inner_steps=5).memory_estimate(support_shape, query_shape) > estimate
    assert maml_memory_estimate(learner.meta_variables, 2, activation_bytes=1000) == 3 * params + 2 * 1000 * 2 + 2 * 1000

    with pytest.raises(ModelError, match="fomaml") as info:
        check_maml_fits(estimate, available_bytes=estimate // 10)
    assert "inner steps" in str(info.value)
    check_maml_fits(estimate, available_bytes=estimate * 10)
    with pytest.raises(ModelError, match="fomaml"):
        learner.check_memory(support_shape, query_shape, available_bytes=100)
    FOMAML(relu_embedding(), WAYS).check_memory(support_shape, query_shape, available_bytes=100)  # first order: no refusal

    if not tf.config.list_physical_devices("GPU"):
        meminfo = tmp_path / "meminfo"
        meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    2048 kB\n")
        assert available_memory_bytes(meminfo_path=meminfo) == 2048 * 1024
