"""The Keras side of the model: the architecture and the TensorFlow reference scorer.

`build_model` is the one definition of the network (training builds it; the artifact's
weights load into it for ``runtime="tensorflow"``). Serving never comes here: see
`sentinel.model.artifact`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.context import ContextLayout
from sentinel.core.features import Scaler
from sentinel.model.fastlstm import WindowScorer, as_risk


def build_model(window_steps: int, n_features: int, units: tuple[int, int],
                dropout: float = 0.0) -> Any:
    """LSTM returning sequences -> LSTM -> dense sigmoid: P(failure starts within horizon).

    `dropout` (on each LSTM's inputs) only acts while training; it adds no weights, so a
    model trained with it loads into one built without it."""
    import keras

    return keras.Sequential([
        keras.Input(shape=(window_steps, n_features)),
        keras.layers.LSTM(units[0], return_sequences=True, dropout=dropout),
        keras.layers.LSTM(units[1], dropout=dropout),
        keras.layers.Dense(1, activation="sigmoid"),
    ], name="sentinel_lstm")


class Scorer(WindowScorer):
    """One compiled inference call for a whole batch of windows.

    The graph is traced once for input shape (None, window_steps, n_features), so batches
    of any size reuse it; `model.predict` per window costs ~50 ms of Python overhead each.
    """

    runtime = "tensorflow"

    def __init__(self, keras_model: Any, scaler: Scaler, config: Config,
                 context: ContextLayout | None = None) -> None:
        import tensorflow as tf

        self.config = config
        self.scaler = scaler
        self.context = context or ContextLayout()
        spec = tf.TensorSpec((None, config.window_steps, self.inputs), tf.float32)
        self._call = tf.function(lambda x: keras_model(x, training=False),
                                 input_signature=[spec], reduce_retracing=True)

    def score_prepared(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        return as_risk(self._call(x).numpy().reshape(-1))
