"""Statistics, metrics, tracing and logging."""
