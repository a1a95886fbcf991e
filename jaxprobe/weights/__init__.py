"""Checkpoint reading, HF-name -> param-tree mapping, dtype policy and placement."""
