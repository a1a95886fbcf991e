"""Key-map rules of the transformers decoder layout every family's LLM shares (Llama, Mistral, Qwen2/3, Gemma 3):
``<prefix>layers.N.{self_attn,mlp,...}``, embeddings, final norm, and the LM head, onto our ``Decoder``."""

from __future__ import annotations

import re

from jaxprobe.weights.rules import Rule

LEAF = r"\.(?P<leaf>weight|bias)"
NORMS = {  # transformers' per-layer norm names -> ours (by role)
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "mlp_norm",  # Llama/Qwen: the norm before the MLP
    "pre_feedforward_layernorm": "mlp_norm",  # Gemma: the norm before the MLP ...
    "post_feedforward_layernorm": "mlp_out_norm",  # ... and the one after it
}
GEMMA_NORMS = {**NORMS, "post_attention_layernorm": "attn_out_norm"}  # Gemma: after attention, not before MLP


def decoder_rules(prefix: str, head: str, tie_word_embeddings: bool, sandwich_norms: bool = False,
                  root: str = "decoder") -> tuple[Rule, ...]:
    """Rules for a decoder stored under ``prefix`` (e.g. ``model.``) with its LM head at ``head`` (e.g.
    ``lm_head.weight``); ``sandwich_norms``: Gemma's naming of the four per-layer norms."""
    p = re.escape(prefix)
    layer = rf"{p}layers\.(?P<layer>\d+)\."
    norms = GEMMA_NORMS if sandwich_norms else NORMS
    rules = [Rule(rf"{layer}{hf}{LEAF}", (root, "layers", ours), "norm") for hf, ours in norms.items()]
    rules += [
        Rule(rf"{layer}self_attn\.(?P<proj>[qkvo]_proj){LEAF}", (root, "layers", "self_attn", "{proj}")),
        Rule(rf"{layer}self_attn\.(?P<norm>[qk]_norm){LEAF}", (root, "layers", "self_attn", "{norm}"), "norm"),
        Rule(rf"{layer}mlp\.(?P<proj>(gate|up|down)_proj){LEAF}", (root, "layers", "mlp", "{proj}")),
        Rule(rf"{p}embed_tokens\.weight", (root, "embed_tokens"), "embedding"),
        Rule(rf"{p}norm\.weight", (root, "norm"), "norm"),
        Rule(re.escape(head), (root, "lm_head"), skip=tie_word_embeddings),
    ]
    return tuple(rules)
