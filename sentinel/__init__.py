"""Sentinel: failure-risk monitoring and alerting for flash sales."""

__version__ = "0.1.0"
