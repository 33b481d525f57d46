"""Serving: the model artifact (save, verify, load) and the runtimes that score windows.

Owns the artifact on disk (`artifact`) and the scorer interface with its ONNX Runtime and
NumPy runtimes (`fastlstm`). Never imports TensorFlow or Keras (tests/test_layout.py checks
this): the Keras architecture and the TensorFlow reference scorer live in
`sentinel.training.keras_model`, loaded only for ``runtime="tensorflow"``. May import
`sentinel.core`, `sentinel.config`, `sentinel.errors`, numpy, h5py and onnx/onnxruntime.
"""
