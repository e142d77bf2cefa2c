"""Per-token attributions for text task models: gradient x input on the token embeddings.

The task model is raw strings -> feature extractor (a nested keras.Model: keras-hub's BERT
preprocessor, a BertBackbone, SequencePooling) -> [layers] -> head. The saved model does not expose
the token embeddings, so this module replays the same layers in one differentiable pass: the run's
own preprocessor turns strings into token ids, the backbone's `token_embedding` layer gives the
embeddings the gradient tape watches, and the rest of the backbone (position and segment
embeddings, layer norm, transformer layers), the pooling and the layers after the extractor run on
them. A token's attribution is sum over the embedding dimension of (gradient x embedding) of the
explained class's log-odds, log p - log(1 - p).

Signed, not absolute: a positive value is evidence for the explained class, a negative one evidence
against it; for a mistake that is the difference between "this word pushed the model to the wrong
class" and "this word pulled towards the right one", which an absolute value would merge. The
log-odds rather than the probability: its gradient is the probability's times 1 / (p (1 - p)), one
positive factor per text, so the shares of a text are the same, while the gradient of a confident
float32 probability (rounded to exactly 1) is 0. It is computed from the head's logits
(z_c - logsumexp of the other logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

WORDPIECE_PREFIX = "##"


@dataclass
class TokenAttributions:
    """One text's words (wordpieces merged back, special tokens left out) and their attributions."""

    words: list[str]
    scores: list[float]  # signed gradient x input, summed over each word's pieces
    truncated: bool  # the text had more tokens than the model reads: only the first ones are here

    def shares(self) -> list[float]:
        """Each word's attribution over the sum of absolute attributions (signed, sums of |.| to 1)."""
        total = sum(abs(s) for s in self.scores)
        return [s / total if total > 0 else 0.0 for s in self.scores]

    def top(self, k: int) -> list[int]:
        """Indices of the k words with the largest positive attributions, largest first."""
        order = sorted(range(len(self.scores)), key=lambda i: -self.scores[i])
        return [i for i in order if self.scores[i] > 0][:k]


def _nested_model(task_model: keras.Model) -> keras.Model:
    for layer in task_model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{task_model.name!r} has no nested feature extractor")


def _bert_extractor(task_model: keras.Model, preprocessor_kind) -> tuple[keras.Model, list]:
    """(the nested model holding the BERT preprocessor, the layers applied after its pooled output, in order).

    A run whose backbone is another run (`--backbone RUN_DIR`) nests that run's extractor one level deeper
    (text -> reused_backbone[text -> bert features -> its embedding or hidden layer] -> head); looking one level
    down only, its token attributions failed ("no BERT preprocessor"), a traceback from predict.py --explain."""
    after: list = []
    model = task_model
    for _ in range(8):  # a reuse of a reuse nests once more per level
        nested = _nested_model(model)
        names = [layer.name for layer in model.layers]
        after = model.layers[names.index(nested.name) + 1:] + after  # the inner model's layers run first
        if any(isinstance(layer, preprocessor_kind) for layer in nested.layers):
            return nested, after
        model = nested
    raise ValueError(f"{task_model.name!r} nests no BERT preprocessor (tokenizer)")


def _find(layers, kind, what: str):
    for layer in layers:
        if isinstance(layer, kind):
            return layer
    raise ValueError(f"the text feature extractor has no {what}")


def _log_odds(head, x, classes):
    """(probabilities, log-odds of each row's class against all the others). From the logits when the
    final layer is a softmax Dense layer (the task model's head_dense): z_c - logsumexp of the other
    logits, whose gradient does not vanish when the float32 softmax has rounded to exactly 1."""
    classes = tf.convert_to_tensor(classes, tf.int32)
    if isinstance(head, keras.layers.Dense) and head.activation is keras.activations.softmax:
        x = tf.cast(x, tf.float32)
        logits = tf.matmul(x, tf.cast(head.kernel, tf.float32))
        if head.use_bias:
            logits = logits + tf.cast(head.bias, tf.float32)
        own = tf.one_hot(classes, tf.shape(logits)[1]) > 0.5
        picked = tf.gather(logits, classes, axis=1, batch_dims=1)
        others = tf.reduce_logsumexp(tf.where(own, tf.fill(tf.shape(logits), -1e30), logits), axis=1)
        return tf.nn.softmax(logits, axis=-1), picked - others
    probabilities = tf.cast(head(x, training=False), tf.float32)
    picked = tf.clip_by_value(tf.gather(probabilities, classes, axis=1, batch_dims=1), 1e-7, 1 - 1e-7)
    return probabilities, tf.math.log(picked) - tf.math.log1p(-picked)


class TokenAttribution:
    """attribute(texts, classes): one TokenAttributions per text, for the given class indices."""

    def __init__(self, task_model: keras.Model):
        import keras_hub

        from models.layers import SequencePooling

        extractor, self.after = _bert_extractor(task_model, keras_hub.models.BertTextClassifierPreprocessor)
        self.preprocessor = _find(extractor.layers, keras_hub.models.BertTextClassifierPreprocessor,
                                  "BERT preprocessor (tokenizer)")
        self.backbone = _find(extractor.layers, keras_hub.models.BertBackbone, "BERT backbone")
        self.pooling = _find(extractor.layers, SequencePooling, "pooling layer")
        # Layers of the extractor itself after the pooling (a reused run's hidden layer when its graph is flat).
        self.after = extractor.layers[extractor.layers.index(self.pooling) + 1:] + self.after
        tokenizer = self.preprocessor.tokenizer
        self.vocabulary = tokenizer.get_vocabulary()
        self.special = {tokenizer.token_to_id(t) for t in (tokenizer.cls_token, tokenizer.sep_token,
                                                           tokenizer.pad_token, tokenizer.mask_token) if t}
        self.sequence_length = self.preprocessor.sequence_length

    def probabilities_and_attributions(self, texts: list[str], classes) -> tuple[np.ndarray, np.ndarray, dict]:
        """(class probabilities [n, classes], per-token attributions [n, tokens], the preprocessor's tokens)."""
        tokens = self.preprocessor(tf.constant(texts, tf.string))
        backbone = self.backbone
        with tf.GradientTape() as tape:
            embedded = backbone.token_embedding(tokens["token_ids"])
            tape.watch(embedded)
            x = backbone.embeddings_add((embedded, backbone.position_embedding(embedded),
                                         backbone.segment_embedding(tokens["segment_ids"])))
            x = backbone.embeddings_layer_norm(x)
            x = backbone.embeddings_dropout(x, training=False)
            for layer in backbone.transformer_layers:
                x = layer(x, padding_mask=tokens["padding_mask"], training=False)
            x = self.pooling(x, tokens["padding_mask"])
            for layer in self.after[:-1]:
                x = layer(x, training=False)
            probabilities, target = _log_odds(self.after[-1], x, classes)
        gradients = tape.gradient(target, embedded)
        scores = tf.reduce_sum(tf.cast(gradients, tf.float32) * tf.cast(embedded, tf.float32), axis=-1)
        return keras.ops.convert_to_numpy(probabilities), scores.numpy(), {k: np.asarray(v) for k, v in tokens.items()}

    def attribute(self, texts: list[str], classes, batch_size: int = 16) -> list[TokenAttributions]:
        results = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            _, scores, tokens = self.probabilities_and_attributions(batch, np.asarray(classes[start:start + batch_size]))
            counts = self._token_counts(batch)
            for row in range(len(batch)):
                results.append(self._words(tokens["token_ids"][row], tokens["padding_mask"][row], scores[row],
                                           counts[row] > self.sequence_length - 2))
        return results

    def _token_counts(self, texts: list[str]) -> list[int]:
        """Each text's wordpieces before the preprocessor cuts it to sequence_length ([CLS] and [SEP] take two
        positions). Asked of the tokenizer: a text that exactly fills the positions looks like a cut one once
        packed, and was marked "cut" though the model read every word."""
        ids = self.preprocessor.tokenizer(tf.constant(texts, tf.string))
        if isinstance(ids, tf.RaggedTensor):
            return [int(n) for n in ids.row_lengths().numpy()]
        return [len(row) for row in ids]

    def _words(self, ids: np.ndarray, mask: np.ndarray, scores: np.ndarray, truncated: bool) -> TokenAttributions:
        words: list[str] = []
        values: list[float] = []
        real = [i for i in range(len(ids)) if mask[i] and int(ids[i]) not in self.special]
        for i in real:
            piece = self.vocabulary[int(ids[i])]
            if piece.startswith(WORDPIECE_PREFIX) and words:
                words[-1] += piece[len(WORDPIECE_PREFIX):]
                values[-1] += float(scores[i])
            else:
                words.append(piece)
                values.append(float(scores[i]))
        return TokenAttributions(words, values, truncated)
