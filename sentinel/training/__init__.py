"""Training and offline evaluation: history in, a validated model artifact and reports out.

Owns reading JSONL history into series (`history`), labelled windows (`dataset`), the Keras
architecture and TensorFlow scorer (`keras_model`), training (`train`), the static-threshold
baseline (`baseline`), alert-quality figures (`evaluate`), backtests (`backtest`) and plots
(`plot`). May import `sentinel.core`, `sentinel.model`, `sentinel.config`, `sentinel.errors`;
never the daemon, retraining or sinks. The only package that imports TensorFlow.
"""
