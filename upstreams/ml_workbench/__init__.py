"""The reference ML Workbench: a model registry and deterministic direction predictions."""
