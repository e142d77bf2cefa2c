"""The meta-learning wrapper: one `keras.Model` that owns the episodic train/test steps.

Input contract (data/episodes.py produces it): every element `fit()` / `evaluate()`
receive is `((support_x, support_y, query_x), query_y)` with a leading task axis T
(tasks per meta step):

    support_x [T, N*K, ...]   support_y [T, N*K] int labels in 0..N-1
    query_x   [T, N*Q, ...]   query_y   [T, N*Q]

T may be static or unknown (a final short meta batch): the tasks are visited by a
`tf.while_loop`, one task at a time, and their outer gradients averaged. One task at a
time keeps the memory of second-order MAML to that of a single task, and the step has
no Python-side state, so `strategy.run` can execute it on every replica.

A subclass (learn2learn style) implements one method,

    task_loss_and_logits(params, support_x, support_y, query_x, query_y, training)
        -> (query_loss, query_logits)

where `params` is the list of current values of `meta_variables` (tensors, watched by
the outer tape). Everything is computed functionally from `params` with
`keras.Layer.stateless_call`, so an algorithm can replace some of them by fast weights
and differentiate through (or around) the replacement. Reptile, whose meta update is not
a loss gradient, overrides `task_gradients` instead.

BatchNormalization (inductive by default): support passes normalise with the support's
batch statistics (ProtoNet's at meta-training only; the inner loop of the gradient
learners always, since it trains on the support at evaluation too); `train_step` then
writes the support's statistics back to the moving statistics, evaluation never does.
Query passes run with `training=False`, so query examples are classified one by one with
the moving statistics and never see each other. `transductive=True` runs the query in
training mode (batch statistics of the whole query set, the original MAML setting); its
statistics are never written back. `self.transductive` is public so reports can label
the numbers. Pitfall (docs/ARCHITECTURE.md): an inductive network trained from scratch for a few
hundred meta steps needs BN momentum ~0.9, not Keras' 0.99, or its moving statistics
lag and queries look random.
Pretrained backbones should keep BN layers frozen (`layer.trainable = False`).
"""

from __future__ import annotations

import copy

import keras
import tensorflow as tf
from keras import ops

from models.errors import ModelError
from models.layer_walk import flat_layers


def cross_entropy(labels, logits):
    """Mean sparse categorical cross-entropy from logits, in float32."""
    logits = ops.cast(logits, "float32")
    return ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True), axis=0)


@keras.saving.register_keras_serializable(package="metatune")
class MetaLearner(keras.Model):
    """Base wrapper: episodic `train_step` / `test_step` around an `embedding` model.

    Args:
        embedding: built `keras.Model`, input -> feature vector [batch, D]. For cached
            features a small Dense stack; for raw inputs a backbone (trainable top,
            frozen BatchNorm) plus pooling.
        ways: N, classes per episode.
        transductive: query BatchNorm uses the query batch statistics (see module doc).

    Metrics: `loss` (query cross-entropy averaged over tasks) and `accuracy` (query,
    after adaptation for the gradient-based learners). Compile with an optimizer only:
    `learner.compile(optimizer=keras.optimizers.Adam(1e-3))`; it is the meta (outer)
    optimizer.
    """

    def __init__(self, embedding: keras.Model, ways: int, *, transductive: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(embedding, keras.Model):
            raise ValueError(f"embedding must be a keras.Model. Received: embedding={type(embedding).__name__}")
        if not embedding.built:
            raise ValueError(f"embedding must be built (give it a keras.Input). Received: {embedding.name!r}, unbuilt")
        if int(ways) < 2:
            raise ValueError(f"ways must be at least 2. Received: ways={ways!r}")
        self.embedding = embedding
        self.ways = int(ways)
        self.transductive = bool(transductive)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Every sublayer is built already; marking the wrapper built keeps fit() from
        # calling it symbolically on an episode tuple it cannot take.
        self.built = True

    # ----------------------------------------------------------------- variables
    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_metric]

    @property
    def meta_variables(self) -> list:
        """The meta-learned variables, in the order of `params`: embedding, then head."""
        return list(self.embedding.trainable_variables)

    @property
    def outer_variables(self) -> list:
        """The variables the outer (meta) optimizer updates; a subset of `meta_variables`."""
        return self.meta_variables

    def read_params(self) -> list:
        """Current values of `meta_variables` as tensors (start of a task's computation)."""
        return [tf.identity(v.value) for v in self.meta_variables]

    # ----------------------------------------------------------- functional calls
    @staticmethod
    def _stateless(layer, values, x, training, update_state):
        """`layer(x)` with its trainable variables replaced by `values`.

        update_state: write the new non-trainable values (BN moving statistics, RNG
        seeds) back to the variables; otherwise the call has no side effect.
        """
        non_trainable = list(layer.non_trainable_variables)
        old_state = [v.value for v in non_trainable]
        outputs, new_state = layer.stateless_call(list(values), old_state, x, training=training)
        if update_state:
            for variable, old, new in zip(non_trainable, old_state, new_state):
                # Unchanged state comes back as the very object passed in: skip it, so a
                # large frozen backbone is not rewritten on every inner step.
                if new is not old:
                    variable.assign(new)
        return outputs

    def features(self, params, x, training=False, update_state=False):
        """Embedding of `x` computed with `params` (the first len(embedding vars) entries)."""
        count = len(self.embedding.trainable_variables)
        return self._stateless(self.embedding, params[:count], x, training, update_state)

    # ------------------------------------------------------------ the algorithm
    def task_loss_and_logits(self, params, support_x, support_y, query_x, query_y, training):
        """One task: query loss and query logits as a differentiable function of `params`."""
        raise NotImplementedError(f"{type(self).__name__} must implement task_loss_and_logits")

    def task_gradients(self, support_x, support_y, query_x, query_y, training=True):
        """One task -> (query loss, query logits, gradient list aligned with meta_variables)."""
        params = self.read_params()
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            loss, logits = self.task_loss_and_logits(params, support_x, support_y, query_x, query_y, training)
        grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, logits, grads

    def apply_meta_gradients(self, grads):
        """Outer step: `grads` (aligned with meta_variables, already averaged) -> optimizer."""
        chosen = {id(v) for v in self.outer_variables}
        pairs = [(g, v) for g, v in zip(grads, self.meta_variables) if id(v) in chosen]
        # The optimizer divides by its loss scale (LossScaleOptimizer under mixed precision,
        # or loss_scale_factor); our gradients are unscaled, so scale them to match.
        scale = self.optimizer.scale_loss(1.0)
        grads = [g if isinstance(scale, (int, float)) and scale == 1.0 else g * ops.cast(scale, g.dtype) for g, _ in pairs]
        self.optimizer.apply(grads, [v for _, v in pairs])

    # --------------------------------------------------------- keras plumbing
    def call(self, inputs, training=False):
        """Inference on a plain batch: the embedding (ProtoNet) or the head logits."""
        return self.embedding(inputs, training=training)

    @staticmethod
    def _unpack(data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(x, (list, tuple)) or len(x) != 3 or y is None:
            raise ValueError(
                "A meta-learning batch must be ((support_x, support_y, query_x), query_y), "
                f"each with a leading task axis. Received x of type {type(x).__name__}, y={'None' if y is None else 'given'}"
            )
        support_x, support_y, query_x = x
        return support_x, support_y, query_x, y

    def _over_tasks(self, data, with_gradients: bool):
        """Visit the T tasks one at a time; returns (mean loss, mean gradients or None)."""
        support_x, support_y, query_x, query_y = self._unpack(data)
        num_tasks = tf.shape(query_y)[0]
        variables = self.meta_variables

        def body(i, loss_sum, *grad_sums):
            args = (support_x[i], support_y[i], query_x[i], query_y[i])
            if with_gradients:
                loss, logits, grads = self.task_gradients(*args, training=True)
            else:
                loss, logits = self.task_loss_and_logits(self.read_params(), *args, training=False)
                grads = []
            self.accuracy_metric.update_state(query_y[i], logits)
            new_sums = [s + ops.cast(g, s.dtype) for s, g in zip(grad_sums, grads)]
            return (i + 1, loss_sum + ops.cast(loss, "float32"), *new_sums)

        init = [tf.zeros(v.shape, v.dtype) for v in variables] if with_gradients else []
        # parallel_iterations=1: one task's graph alive at a time (second-order memory).
        _, loss_sum, *grad_sums = tf.while_loop(
            lambda i, *_: i < num_tasks, body, (tf.constant(0), tf.constant(0.0), *init), parallel_iterations=1
        )
        count = tf.maximum(tf.cast(num_tasks, "float32"), 1.0)  # a replica may get no task
        if not with_gradients:
            return loss_sum / count, None
        # Like Keras' own losses under tf.distribute: each replica contributes 1/replicas
        # of the mean, the optimizer sums across replicas.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        grads = [g / ops.cast(count * replicas, g.dtype) for g in grad_sums]
        return loss_sum / count, grads

    def train_step(self, data):
        loss, grads = self._over_tasks(data, with_gradients=True)
        self.apply_meta_gradients(grads)
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        loss, _ = self._over_tasks(data, with_gradients=False)
        self.loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def episode_logits(self, support_x, support_y, query_x, ways: int | None = None):
        """Query logits [N*Q, ways] of ONE episode after adapting on its support (few-shot evaluation).

        No task axis: support_x [N*K, ...], support_y [N*K] in 0..ways-1, query_x [N*Q, ...].
        Inference: nothing is written back (BN moving statistics included), the query
        runs in training mode only if `self.transductive`, and no variable changes (the
        inner loop works on copies; see the module doc for the support's BatchNorm). `ways` (default
        `self.ways`): N of the episode. Learners with a fixed N-way head (MAML, FOMAML,
        Reptile) take only their own N; ProtoNet forms as many prototypes as asked.
        Wrap it in a new `tf.function` per evaluation: the Python `ways` is fixed per trace.
        """
        ways = self.ways if ways is None else int(ways)
        if ways != self.ways and getattr(self, "head", None) is not None:
            raise ValueError(f"{type(self).__name__} has a {self.ways}-way head and cannot classify a {ways}-way "
                             f"episode. Received: ways={ways}")
        # Query labels only feed the loss, which is discarded here.
        query_y = tf.zeros(tf.shape(query_x)[:1], "int32")
        trained_ways = self.ways
        self.ways = ways  # the prototype count (ProtoNet); restored below
        try:
            _, logits = self.task_loss_and_logits(self.read_params(), support_x, ops.cast(support_y, "int32"),
                                                  query_x, query_y, training=False)
        finally:
            self.ways = trained_ways
        return logits

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "embedding": keras.saving.serialize_keras_object(self.embedding),
            "ways": self.ways,
            "transductive": self.transductive,
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # Keras' deserializer consumes the nested dicts
        for key in ("embedding", "head"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@keras.saving.register_keras_serializable(package="metatune")
class GradientMetaLearner(MetaLearner):
    """Base of the inner-loop learners (MAML, FOMAML, Reptile): embedding + Dense(ways) head.

    The head's weights are part of the meta-learned initialisation.

    Args:
        head: a `keras.layers.Dense(ways)` (logits, no activation); default: a new one.
        adapt: which variables change in the inner loop. "head" (= 0): the head only
            (ANIL); an int N: the head and the top N embedding layers that have
            trainable weights; "all": every trainable variable; a list of layers (or
            their names) of the embedding: those plus the head (e.g. the layers of the
            top blocks of a backbone). The other trainable variables are only
            meta-updated (MAML, FOMAML) or stay as they are (Reptile).
        inner_learning_rate: SGD step of the inner loop.
        inner_steps: inner SGD steps per task at meta-training (static).
        eval_inner_steps: inner SGD steps at evaluation (`test_step`, `episode_logits`);
            None: `inner_steps`. MAML adapts with more steps at test than in training
            (Finn et al.: 1 or 5 in training, 10 at test); public, so an evaluation may
            set it on a trained learner.
    """

    QUERY_STATISTICS = ("moving", "support")

    def __init__(self, embedding, ways, *, head=None, adapt="head", inner_learning_rate: float = 0.01,
                 inner_steps: int = 1, eval_inner_steps: int | None = None, query_statistics: str = "moving",
                 **kwargs):
        super().__init__(embedding, ways, **kwargs)
        if query_statistics not in self.QUERY_STATISTICS:
            raise ValueError(f"query_statistics must be one of {self.QUERY_STATISTICS}. "
                             f"Received: query_statistics={query_statistics!r}")
        self.query_statistics = query_statistics
        if query_statistics == "support":
            self._check_support_statistics_recoverable()
        if int(inner_steps) < 1:
            raise ValueError(f"inner_steps must be at least 1. Received: inner_steps={inner_steps!r}")
        if eval_inner_steps is not None and int(eval_inner_steps) < 1:
            raise ValueError(f"eval_inner_steps must be at least 1 or None. Received: eval_inner_steps={eval_inner_steps!r}")
        if float(inner_learning_rate) <= 0:
            raise ValueError(f"inner_learning_rate must be positive. Received: inner_learning_rate={inner_learning_rate!r}")
        self.inner_learning_rate = float(inner_learning_rate)
        self.inner_steps = int(inner_steps)
        self.eval_inner_steps = None if eval_inner_steps is None else int(eval_inner_steps)
        if head is None:
            # float32 whatever the global policy: logits feed a softmax.
            head = keras.layers.Dense(self.ways, name="meta_head", dtype="float32")
        if getattr(head, "units", self.ways) != self.ways:
            raise ValueError(f"head must have {self.ways} outputs (ways). Received: units={head.units}")
        self.head = head
        if not head.built:
            output = embedding.outputs[0] if getattr(embedding, "outputs", None) else None
            if output is None:
                raise ValueError(f"Cannot infer the feature size of embedding {embedding.name!r}; pass a built head.")
            head.build(tuple(output.shape))
        # Kept as plain data (layer names, not layers) so get_config can return it;
        # adapted_layers resolves it on demand.
        self._adapt_spec = self._normalise_adapt(adapt)
        self.adapted_layers  # noqa: B018  (fail now on a bad name, not at fit time)

    # ------------------------------------------------------- adapted variables
    @staticmethod
    def _normalise_adapt(adapt):
        if adapt == "head":
            return 0
        if adapt == "all":
            return "all"
        if isinstance(adapt, bool):
            raise ValueError(f"adapt must be 'head', 'all', a number of layers or a list of layers. Received: adapt={adapt!r}")
        if isinstance(adapt, int):
            if adapt < 0:
                raise ValueError(f"adapt must be >= 0 layers. Received: adapt={adapt!r}")
            return adapt
        if isinstance(adapt, (list, tuple)):
            return tuple(item if isinstance(item, str) else item.name for item in adapt)
        raise ValueError(f"adapt must be 'head', 'all', a number of layers or a list of layers. Received: adapt={adapt!r}")

    @property
    def adapted_layers(self) -> list:
        """The layers whose trainable variables change in the inner loop (the head last)."""
        adapt = self._adapt_spec
        leaves = flat_layers(self.embedding)
        with_weights = [layer for layer in leaves if layer.trainable_variables]
        if adapt == "all":
            chosen = with_weights
        elif isinstance(adapt, int):
            chosen = with_weights[len(with_weights) - adapt:] if adapt else []
        else:
            by_name = {}
            for layer in leaves:
                by_name.setdefault(layer.name, []).append(layer)
            chosen = []
            for name in adapt:
                found = by_name.get(name, [])
                if len(found) != 1:
                    raise ValueError(
                        f"adapt names a layer that is {'missing from' if not found else 'ambiguous in'} the "
                        f"embedding. Received: {name!r}; layers with weights: {[l.name for l in with_weights]}"
                    )
                chosen.append(found[0])
        return chosen + [self.head]

    @property
    def meta_variables(self) -> list:
        return list(self.embedding.trainable_variables) + list(self.head.trainable_variables)

    @property
    def adapted_variables(self) -> list:
        ids = {id(v) for layer in self.adapted_layers for v in layer.trainable_variables}
        return [v for v in self.meta_variables if id(v) in ids]

    @property
    def adapted_indices(self) -> list[int]:
        """Positions of the adapted variables in `meta_variables` / `params`."""
        ids = {id(v) for v in self.adapted_variables}
        return [i for i, v in enumerate(self.meta_variables) if id(v) in ids]

    # ----------------------------------------------------------------- calls
    def logits(self, params, x, training=False, update_state=False):
        count = len(self.embedding.trainable_variables)
        feats = self.features(params, x, training, update_state)
        return self._stateless(self.head, params[count:], feats, training, False)

    def call(self, inputs, training=False):
        return self.head(self.embedding(inputs, training=training))

    def inner_batches(self, support_x, support_y, steps):
        """The (x, y) of each inner step: the whole support set (Reptile may use minibatches).

        support_x may be support features (head-only adaptation embeds them once).
        """
        return [(support_x, support_y)] * steps

    def adapt_params(self, params, support_x, support_y, training=False, first_order=True, steps=None):
        """Inner loop: `steps` SGD steps on the support loss, on the adapted params only.

        Returns (fast params, support losses before each step). `first_order`: the
        inner gradients are constants for the outer tape, and fast = params + a
        constant, so d(query loss)/d(params) is the gradient at the adapted weights
        (FOMAML); otherwise gradients flow through every inner update (MAML).
        Support passes always run in training mode (BN batch statistics of the support);
        `training` only decides whether they update BN's moving statistics.
        """
        steps = self.inner_steps if steps is None else int(steps)
        indices = self.adapted_indices
        start = [tf.stop_gradient(p) for p in params] if first_order else list(params)
        fast = list(start)
        count = len(self.embedding.trainable_variables)
        # The inner loop is training on the support set, at meta-training and at
        # evaluation alike: BatchNorm normalises with the support's own batch statistics
        # (still inductive: the query is never in that batch). Only meta-training writes
        # them back to the moving statistics. Running the support in inference mode at
        # evaluation instead changes the activations the inner learning rate was
        # meta-learned for; a conv4 meta-trained with adapt="all" then diverges to chance.
        if all(i >= count for i in indices):
            # Head only: the embedding is the same at every inner step, embed the support once.
            inputs = self.features(start, support_x, training=True, update_state=training)

            def forward(values, x):
                return self._stateless(self.head, values[count:], x, True, False)
        else:
            inputs = support_x

            def forward(values, x):
                return self.logits(values, x, training=True, update_state=training)

        losses = []
        for x, y in self.inner_batches(inputs, support_y, steps):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                watched = [fast[i] for i in indices]
                tape.watch(watched)
                loss = cross_entropy(y, forward(fast, x))
            grads = tape.gradient(loss, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            for i, g in zip(indices, grads):
                if first_order:
                    g = tf.stop_gradient(g)
                fast[i] = fast[i] - ops.cast(self.inner_learning_rate, g.dtype) * g
            losses.append(loss)
        if first_order:
            # Straight-through: the value of the adapted weights, the gradient path of params.
            fast = [p + tf.stop_gradient(f - s) for p, f, s in zip(params, fast, start)]
        return fast, losses

    def adapted_query(self, params, support_x, support_y, query_x, query_y, training, first_order):
        """Adapt on the support, then (query loss, query logits) at the adapted weights.

        `inner_steps` steps at meta-training (`training=True`), `eval_inner_steps` at evaluation.
        """
        steps = self.inner_steps if training or self.eval_inner_steps is None else self.eval_inner_steps
        fast, _ = self.adapt_params(params, support_x, support_y, training=training, first_order=first_order, steps=steps)
        logits = self.query_logits(fast, support_x, query_x)
        return cross_entropy(query_y, logits), logits

    def query_logits(self, fast, support_x, query_x):
        """The query's logits at the adapted weights `fast`, its BatchNorm as the learner's mode says:
        the query's own batch statistics (`transductive`), the support's (`query_statistics="support"`),
        or the moving statistics."""
        if self.transductive or self.query_statistics == "moving":
            return self.logits(fast, query_x, training=self.transductive, update_state=False)
        # MetaBN (Bronskill et al., ICML 2020, "TaskNorm"): each query normalised with the statistics of the
        # support at the adapted weights. Inductive (a query sees the support, never another query), and the
        # normalisation the inner loop adapted under, where the moving statistics (averages over many tasks'
        # supports) are not: measured on the fonts bench (BENCHMARKS.md, few-shot section).
        count = len(self.embedding.trainable_variables)
        variables = list(self.embedding.non_trainable_variables)
        old = [v.value for v in variables]
        _, new = self.embedding.stateless_call(list(fast[:count]), old, support_x, training=True)
        momentum = self._moving_statistic_momentum()
        # A BatchNorm layer in training mode returns momentum x old + (1 - momentum) x batch statistic:
        # solved for the support's batch statistic. Frozen layers return `old` itself (moving statistics).
        state = [o if n is o or id(v) not in momentum else (n - momentum[id(v)] * o) / (1.0 - momentum[id(v)])
                 for v, o, n in zip(variables, old, new)]
        features, _ = self.embedding.stateless_call(list(fast[:count]), state, query_x, training=False)
        return self._stateless(self.head, fast[count:], features, False, False)

    def _check_support_statistics_recoverable(self):
        """`query_logits` reads the support's statistics back from each trainable BatchNorm layer's
        moving-statistics update, which a momentum of 1 (statistics never updated) makes impossible."""
        for layer in flat_layers(self.embedding):
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and float(layer.momentum) >= 1.0:
                raise ModelError(f"BatchNormalization layer {layer.name!r} has momentum {layer.momentum}: its moving "
                                 "statistics never update, so the support's statistics cannot be read from them to "
                                 "normalise the queries. Use a momentum below 1 (Keras' default is 0.99) or "
                                 "query_statistics='moving'.")

    def _moving_statistic_momentum(self) -> dict[int, float]:
        """{id(moving mean or variance variable): its BatchNormalization layer's momentum}."""
        momentum = {}
        for layer in flat_layers(self.embedding):
            if isinstance(layer, keras.layers.BatchNormalization):
                for variable in (layer.moving_mean, layer.moving_variance):
                    momentum[id(variable)] = float(layer.momentum)
        return momentum

    def get_config(self):
        return super().get_config() | {
            "head": keras.saving.serialize_keras_object(self.head),
            "adapt": list(self._adapt_spec) if isinstance(self._adapt_spec, (list, tuple)) else self._adapt_spec,
            "inner_learning_rate": self.inner_learning_rate,
            "inner_steps": self.inner_steps,
            "eval_inner_steps": self.eval_inner_steps,
            "query_statistics": self.query_statistics,
        }
