"""Flax linen models (Qwen2-VL, Qwen2.5-VL) with every probing site sown; see DESIGN.md."""
