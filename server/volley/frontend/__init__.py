"""Transports over the ``InferenceService``: gRPC today."""
