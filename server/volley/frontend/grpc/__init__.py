"""The KServe v2 gRPC frontend: servicer, error boundary, health, reflection, server."""
