"""Key-map rules of transformers' CLIP / SigLIP vision towers (``embeddings.*``, ``encoder.layers.N.*``,
``pre_layrnorm``, ``post_layernorm``) onto our ``ViTTower``, shared by the families built on them."""

from __future__ import annotations

import re

from jaxprobe.families.decoder_keys import LEAF
from jaxprobe.weights.rules import Rule


def vit_rules(prefix: str, post_norm: bool, root: str = "vision") -> tuple[Rule, ...]:
    """Rules for a CLIP or SigLIP vision model stored under ``prefix`` (e.g. ``vision_tower.vision_model.``). Parts
    a VLM does not use are skipped: the SigLIP attention-pooling head, and the final LayerNorm when the connector
    reads the blocks' output directly (LLaVA)."""
    p = re.escape(prefix)
    layer = rf"{p}encoder\.layers\.(?P<layer>\d+)\."
    return (
        Rule(rf"{p}embeddings\.patch_embedding{LEAF}", (root, "patch_embed"), "conv"),
        Rule(rf"{p}embeddings\.class_embedding", (root, "class_embedding"), "raw"),
        Rule(rf"{p}embeddings\.position_embedding\.weight", (root, "position_embedding"), "raw"),
        Rule(rf"{p}pre_layrnorm{LEAF}", (root, "pre_norm"), "norm"),
        Rule(rf"{p}post_layernorm{LEAF}", (root, "post_norm"), "norm", skip=not post_norm),
        Rule(rf"{layer}(?P<norm>layer_norm[12]){LEAF}", (root, "blocks", "{norm}"), "norm"),
        Rule(rf"{layer}self_attn\.(?P<proj>[qkv]_proj|out_proj){LEAF}", (root, "blocks", "{proj}")),
        Rule(rf"{layer}mlp\.(?P<fc>fc[12]){LEAF}", (root, "blocks", "{fc}")),
        Rule(rf"{p}head\..*", (root, "head"), skip=True),
    )
