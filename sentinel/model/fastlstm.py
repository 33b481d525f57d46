"""Serving the two-layer LSTM without TensorFlow: ONNX Runtime, or a fused NumPy pass.

    >>> weights = read_weights(path / "model.weights.h5", n_features=4, units=(48, 24))
    >>> scorer = FastScorer(weights, scaler, config)   # onnxruntime if installed, else numpy
    >>> risk = scorer.score(raw_windows)

TensorFlow trains the model and stays the reference (`sentinel.training.keras_model.Scorer`). Both runtimes
here compute `build_model`'s inference graph (Keras LSTM: gates i, f, c, o in that order,
sigmoid recurrent activation, tanh activation; dense sigmoid head) from the same weights;
``tests/model/test_fast_inference.py`` holds them to the Keras model within TOLERANCE. ONNX
Runtime's fused LSTM kernel is the fastest on two cores (BENCHMARKS.md); the NumPy pass
needs nothing beyond NumPy and is the fallback.

The NumPy pass projects the inputs of the first layer for every step of every window in one
matmul and does one matmul per layer and step, with two rewrites, exact up to float32
rounding:

- sigmoid(z) = (tanh(z / 2) + 1) / 2, and the 1/2 is folded into the weights of the i, f, o
  gates at load time, so one `tanh` over all four gates is the only transcendental call;
- h1 feeds layer 1's next step and layer 2's current step, so ``h1 @ [R1 | K2]`` is one
  matmul instead of two.

The weights file is read with h5py as plain arrays (no code from the artifact runs), and
every array's shape is checked against the architecture the metadata names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentinel.config.schema import Config
from sentinel.core.context import ContextLayout, with_context
from sentinel.core.features import Scaler
from sentinel.errors import ModelError

# Largest |risk difference| against the Keras model on the same weights: float32 throughout,
# and the two differ only in the order of the additions and in the sigmoid's formula.
TOLERANCE = 1e-5

# where Keras 3 (`save_weights`) stores each array; layers are named after their class
_H5_PATHS = ("layers/lstm/cell/vars/0", "layers/lstm/cell/vars/1", "layers/lstm/cell/vars/2",
             "layers/lstm_1/cell/vars/0", "layers/lstm_1/cell/vars/1", "layers/lstm_1/cell/vars/2",
             "layers/dense/vars/0", "layers/dense/vars/1")


@dataclass(frozen=True)
class LstmWeights:
    """The arrays of `build_model`, in Keras's layout: kernels (in, 4u), biases (4u,)."""

    kernel1: np.ndarray
    recurrent1: np.ndarray
    bias1: np.ndarray
    kernel2: np.ndarray
    recurrent2: np.ndarray
    bias2: np.ndarray
    dense_kernel: np.ndarray
    dense_bias: np.ndarray

    @classmethod
    def from_keras(cls, keras_model: Any) -> LstmWeights:
        return cls(*(np.asarray(w, np.float32) for w in keras_model.get_weights()))

    @property
    def units(self) -> tuple[int, int]:
        return self.recurrent1.shape[0], self.recurrent2.shape[0]

    def multiply_adds_per_window(self, steps: int) -> int:
        """Multiply-adds of the matmuls for one window (the element-wise work is extra)."""
        (u1, u2), n_features = self.units, self.kernel1.shape[0]
        per_step = 4 * u1 * (n_features + u1) + 4 * u2 * (u1 + u2)
        return steps * per_step + u2


def expected_shapes(n_features: int, units: tuple[int, int]) -> tuple[tuple[int, ...], ...]:
    u1, u2 = units
    return ((n_features, 4 * u1), (u1, 4 * u1), (4 * u1,),
            (u1, 4 * u2), (u2, 4 * u2), (4 * u2,), (u2, 1), (1,))


def read_weights(path: Path, n_features: int, units: tuple[int, int]) -> LstmWeights:
    """The arrays of a Keras ``model.weights.h5``; ModelError naming what does not fit."""
    import h5py

    arrays = []
    try:
        with h5py.File(path, "r") as handle:
            for name, shape in zip(_H5_PATHS, expected_shapes(n_features, units), strict=True):
                dataset = handle.get(name)
                if not isinstance(dataset, h5py.Dataset):
                    raise ModelError(f"{path}: no array {name} (not a weights file of build_model)")
                if dataset.shape != shape:
                    raise ModelError(f"{path}: {name} has shape {dataset.shape}, the model "
                                     f"({n_features} features, units {list(units)}) needs {shape}")
                arrays.append(np.asarray(dataset[()], np.float32))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: cannot load weights: {exc}") from exc
    return LstmWeights(*arrays)


class _Prepared:
    """The weights rearranged for `forward` (see the module docstring)."""

    def __init__(self, w: LstmWeights) -> None:
        u1, u2 = w.units
        s1, s2 = _gate_scale(u1), _gate_scale(u2)
        self.u1, self.u2 = u1, u2
        self.kernel1, self.bias1 = w.kernel1 * s1, w.bias1 * s1
        self.joint = np.ascontiguousarray(np.concatenate([w.recurrent1 * s1, w.kernel2 * s2], axis=1))
        self.recurrent2, self.bias2 = np.ascontiguousarray(w.recurrent2 * s2), w.bias2 * s2
        self.dense_kernel, self.dense_bias = w.dense_kernel, w.dense_bias


def _gate_scale(units: int) -> np.ndarray:
    """1/2 for the columns of the sigmoid gates (i, f, o), 1 for the tanh candidate (c)."""
    scale = np.full(4 * units, 0.5, np.float32)
    scale[2 * units: 3 * units] = 1.0
    return scale


def _cell(z: np.ndarray, c: np.ndarray, h: np.ndarray, units: int) -> None:
    """One LSTM step in place: `z` (n, 4u) holds the scaled pre-activations; updates c and h."""
    np.tanh(z, out=z)
    sig = z[:, : 2 * units], z[:, 3 * units:]
    for part in sig:  # tanh(z/2) -> sigmoid(z)
        part *= 0.5
        part += 0.5
    i, f = z[:, :units], z[:, units: 2 * units]
    g, o = z[:, 2 * units: 3 * units], z[:, 3 * units:]
    c *= f
    i *= g
    c += i
    np.tanh(c, out=h)
    h *= o


def _forward(p: _Prepared, x: np.ndarray) -> np.ndarray:
    n, steps, n_features = x.shape
    u1, u2 = p.u1, p.u2
    # step-major, so each step's rows are contiguous
    proj1 = (np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(steps * n, n_features)
             @ p.kernel1).reshape(steps, n, 4 * u1)
    proj1 += p.bias1
    h1, c1 = np.zeros((n, u1), np.float32), np.zeros((n, u1), np.float32)
    h2, c2 = np.zeros((n, u2), np.float32), np.zeros((n, u2), np.float32)
    z1 = proj1[0]  # h1 starts at 0: no recurrent term
    for t in range(steps):
        _cell(z1, c1, h1, u1)
        joint = h1 @ p.joint  # (n, 4u1 + 4u2): layer 1's next recurrent term, layer 2's input
        z2 = joint[:, 4 * u1:]
        z2 += p.bias2
        if t:
            z2 += h2 @ p.recurrent2
        _cell(z2, c2, h2, u2)
        if t + 1 < steps:
            z1 = proj1[t + 1]
            z1 += joint[:, : 4 * u1]
    logit = (h2 @ p.dense_kernel).reshape(-1) + p.dense_bias[0]
    return 0.5 * np.tanh(0.5 * logit) + 0.5


def forward(weights: LstmWeights, x: np.ndarray) -> np.ndarray:
    """(n, steps, n_features) scaled float32 input -> (n,) float32 risk."""
    return _forward(_Prepared(weights), np.asarray(x, np.float32))



def to_onnx(weights: LstmWeights, steps: int) -> bytes:
    """The same network as an ONNX graph (two ONNX `LSTM` ops and the dense head), serialized.

    ONNX orders the gates i, o, f, c (Keras: i, f, c, o) and keeps the weights transposed,
    with a second (recurrent) bias that Keras folds into the first."""
    from onnx import TensorProto, helper, numpy_helper

    def reorder(a: np.ndarray) -> np.ndarray:
        i, f, c, o = np.split(a, 4, axis=-1)
        return np.concatenate([i, o, f, c], axis=-1)

    w, (u1, u2) = weights, weights.units
    arrays = {
        "W1": reorder(w.kernel1).T[None], "R1": reorder(w.recurrent1).T[None],
        "B1": np.concatenate([reorder(w.bias1), np.zeros(4 * u1, np.float32)])[None],
        "W2": reorder(w.kernel2).T[None], "R2": reorder(w.recurrent2).T[None],
        "B2": np.concatenate([reorder(w.bias2), np.zeros(4 * u2, np.float32)])[None],
        "dense_kernel": w.dense_kernel, "dense_bias": w.dense_bias,
    }
    initializers = [numpy_helper.from_array(np.ascontiguousarray(a, np.float32), name)
                    for name, a in arrays.items()]
    initializers += [numpy_helper.from_array(np.array([axis], np.int64), f"axis{axis}")
                     for axis in (0, 1)]
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_steps"], perm=[1, 0, 2]),  # ONNX is step-major
        helper.make_node("LSTM", ["x_steps", "W1", "R1", "B1"], ["y1"], hidden_size=u1),
        helper.make_node("Squeeze", ["y1", "axis1"], ["h1"]),  # (steps, 1 direction, n, u1)
        helper.make_node("LSTM", ["h1", "W2", "R2", "B2"], ["", "last2"], hidden_size=u2),
        helper.make_node("Squeeze", ["last2", "axis0"], ["h2"]),
        helper.make_node("MatMul", ["h2", "dense_kernel"], ["logit0"]),
        helper.make_node("Add", ["logit0", "dense_bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["risk"]),
    ]
    n_features = w.kernel1.shape[0]
    graph = helper.make_graph(
        nodes, "sentinel_lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", steps, n_features])],
        [helper.make_tensor_value_info("risk", TensorProto.FLOAT, ["n", 1])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def available_runtimes() -> tuple[str, ...]:
    """Serving runtimes usable here, fastest first (BENCHMARKS.md has the figures)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return ("numpy",)
    return ("onnxruntime", "numpy")


def as_risk(raw: np.ndarray) -> np.ndarray:
    """A model's outputs as risks: float64, NaN as 0, within [0, 1]."""
    return np.clip(np.nan_to_num(raw.astype(np.float64), nan=0.0), 0.0, 1.0)


class WindowScorer:
    """What every scorer shares: raw windows -> scaled input (+ context channels) -> risks.
    Subclasses set `config`, `scaler`, `runtime` and `context` (the channels the model
    records, `sentinel.core.context`) and implement `score_prepared`."""

    config: Config
    scaler: Scaler
    runtime: str
    context: ContextLayout = ContextLayout()

    @property
    def inputs(self) -> int:
        """The model's input width: the prepared features, then the context channels."""
        return self.scaler.inputs + self.context.width

    def prepare(self, windows: np.ndarray) -> np.ndarray:
        """Raw windows (n, steps, n_metrics) -> scaled own inputs (n, steps, scaler.inputs)."""
        return self.scaler.prepare(windows, self.config.features)

    def score_prepared(self, x: np.ndarray) -> np.ndarray:
        """(n, steps, inputs) model input, context channels included -> risks."""
        raise NotImplementedError

    def score(self, windows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        """Raw windows, and their context (n, steps, context.width); a model that records
        context channels gets neutral ones when `context` is None."""
        prepared = self.prepare(windows)
        if context is None:
            context = self.context.neutral(len(prepared), prepared.shape[1])
        elif not self.context.providers:
            context = None  # a model from before context channels: its own windows only
        return self.score_prepared(with_context(prepared, context))


class FastScorer(WindowScorer):
    """`sentinel.training.keras_model.Scorer`'s interface without TensorFlow: ONNX Runtime, or NumPy.

    ``runtime="onnxruntime"`` runs `to_onnx`'s graph (2-4x the windows/s of TensorFlow and
    of the NumPy pass on two cores) in calls of at most `onnx_chunk` windows: on two Zen 4
    cores 128-256 windows per call scored ~30 % more windows/s than 2,000 (the recurrent
    state of a call stays in cache; benchmarks/scoring.py). ``"numpy"`` runs `forward` in
    chunks of `chunk` windows that keep each step's state in the L2 cache. `threads` is ONNX
    Runtime's intra-op pool (default: one per core); its threads sleep between calls instead
    of spinning, which would take the CPU from the decoding thread. Its memory arena stays
    on: without it, batches of varying size fragmented the heap (more RSS, and 1/3 fewer
    windows/s).
    """

    def __init__(self, weights: LstmWeights, scaler: Scaler, config: Config,
                 runtime: str | None = None, threads: int = 0, chunk: int = 512,
                 onnx_chunk: int = 256, context: ContextLayout | None = None) -> None:
        self.config = config
        self.scaler = scaler
        self.context = context or ContextLayout()
        self.weights = weights
        self.runtime = runtime or available_runtimes()[0]
        self.chunk, self.onnx_chunk = chunk, onnx_chunk
        if self.runtime == "onnxruntime":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = onnxruntime.InferenceSession(
                to_onnx(weights, config.window_steps), options, providers=["CPUExecutionProvider"])
        elif self.runtime == "numpy":
            self._prepared = _Prepared(weights)
        else:
            raise ValueError(f"runtime must be one of {available_runtimes()}, got: {runtime!r}")

    def score_prepared(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        x = np.ascontiguousarray(x, np.float32)
        if self.runtime == "onnxruntime":
            risk = np.concatenate([self._session.run(None, {"x": x[i: i + self.onnx_chunk]})[0]
                                   .reshape(-1) for i in range(0, len(x), self.onnx_chunk)])
        else:
            risk = np.concatenate([_forward(self._prepared, x[i: i + self.chunk])
                                   for i in range(0, len(x), self.chunk)])
        return as_risk(risk)
