"""Scheduling of inference requests onto model instances."""
