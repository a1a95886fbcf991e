"""Shared statistics with no jax and no TFDS: fold indices, resampling, calibration, classification metrics.

Probes, scoring and data all need these; keeping them here lets each of those packages stay free of the others.
"""
