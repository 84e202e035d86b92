"""Application layer: CLI, configuration models and the composition root."""
