"""Decoder-only LLMs; one module with feature flags (``TextConfig``)."""
