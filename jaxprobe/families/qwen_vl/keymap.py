"""HF tensor names of Qwen2-VL / Qwen2.5-VL -> our params tree (``VisionLanguageModel``).

Both layouts load: the hub's (``model.layers.*``, ``visual.*``, ``lm_head.weight``, what ``save_pretrained``
writes) and transformers 5's in-memory one (``model.language_model.*``, ``model.visual.*``). Blocks and layers
fill rows of stacked leaves (scanned layers).
"""

from __future__ import annotations

from jaxprobe.weights.rules import Rule, RuleKeyMap

LEAF = r"\.(?P<leaf>weight|bias)"
ALIASES = (("model.language_model.", "model."), ("model.visual.", "visual."))
RULES = (
    Rule(r"visual\.patch_embed\.proj\.weight", ("vision", "patch_embed"), "conv"),
    Rule(rf"visual\.blocks\.(?P<layer>\d+)\.(?P<norm>norm1|norm2){LEAF}", ("vision", "blocks", "{norm}"), "norm"),
    Rule(rf"visual\.blocks\.(?P<layer>\d+)\.attn\.(?P<proj>qkv|proj){LEAF}", ("vision", "blocks", "{proj}")),
    Rule(rf"visual\.blocks\.(?P<layer>\d+)\.mlp\.(?P<proj>\w+){LEAF}", ("vision", "blocks", "mlp", "{proj}")),
    Rule(rf"visual\.merger\.ln_q{LEAF}", ("connector", "ln_q"), "norm"),
    Rule(rf"visual\.merger\.mlp\.(?P<index>0|2){LEAF}", ("connector", "mlp_{index}")),
    Rule(r"model\.embed_tokens\.weight", ("decoder", "embed_tokens"), "embedding"),
    Rule(rf"model\.layers\.(?P<layer>\d+)\.(?P<norm>input_layernorm|post_attention_layernorm){LEAF}",
         ("decoder", "layers", "{norm}"), "norm"),
    Rule(rf"model\.layers\.(?P<layer>\d+)\.self_attn\.(?P<proj>[qkvo]_proj){LEAF}",
         ("decoder", "layers", "self_attn", "{proj}")),
    Rule(rf"model\.layers\.(?P<layer>\d+)\.mlp\.(?P<proj>\w+){LEAF}", ("decoder", "layers", "mlp", "{proj}")),
    Rule(r"model\.norm\.weight", ("decoder", "norm"), "norm"),
)


def keymap(tie_word_embeddings: bool) -> RuleKeyMap:
    head = Rule(r"lm_head\.weight", ("decoder", "lm_head"), skip=tie_word_embeddings)
    return RuleKeyMap((*RULES, head), ALIASES)
