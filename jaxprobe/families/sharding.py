"""Sharding rules shared by families whose modules share param names (the decoder, the CLIP/SigLIP-style ViT
blocks, the ``mlp2x_gelu`` connector); a family lists these plus its own.

A rule is ``(param path regex, PartitionSpec entries over the full leaf)``; stacked (scanned) leaves lead with the
layer axis, which is never sharded. Megatron-style: column-parallel into a block, row-parallel out of it, so each
block needs one all-reduce.
"""

from __future__ import annotations

ShardingRule = tuple[str, tuple[str | None, ...]]

DECODER: list[ShardingRule] = [
    (r"decoder/layers/self_attn/[qkv]_proj/kernel", (None, None, "model")),
    (r"decoder/layers/self_attn/[qkv]_proj/bias", (None, "model")),
    (r"decoder/layers/self_attn/o_proj/kernel", (None, "model", None)),
    (r"decoder/layers/mlp/(gate|up)_proj/kernel", (None, None, "model")),
    (r"decoder/layers/mlp/down_proj/kernel", (None, "model", None)),
    (r"decoder/embed_tokens/embedding", ("model", None)),
    (r"decoder/lm_head/kernel", (None, "model")),
]

VIT_BLOCKS: list[ShardingRule] = [
    (r"vision/blocks/([qkv]_proj|fc1)/kernel", (None, None, "model")),
    (r"vision/blocks/([qkv]_proj|fc1)/bias", (None, "model")),
    (r"vision/blocks/(out_proj|fc2)/kernel", (None, "model", None)),
    (r"vision/patch_embed/kernel", (None, "model")),  # column-parallel: XLA reshards before the blocks
]

MLP2X_CONNECTOR: list[ShardingRule] = [
    (r"connector/linear_1/kernel", (None, "model")),
    (r"connector/linear_1/bias", ("model",)),
    (r"connector/linear_2/kernel", ("model", None)),
]
