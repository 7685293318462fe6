"""Volley: a KServe v2 / Open Inference Protocol gRPC inference server."""

__version__ = "0.1.0"
