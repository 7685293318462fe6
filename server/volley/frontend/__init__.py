"""Transports over the ``InferenceService``: gRPC (two servers) and KServe v2 REST."""
