"""The data plane: registry, model lifecycle and the transport-free ``InferenceService``."""
