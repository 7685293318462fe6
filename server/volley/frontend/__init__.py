"""gRPC frontend: servicer, codec, the error mapping, health."""
