"""Probe trainers that know nothing about models: arrays in, metrics out."""
