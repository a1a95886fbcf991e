"""HF tensor names of Qwen2-VL / Qwen2.5-VL -> our params tree (``VisionLanguageModel``).

Both layouts load: the hub's (``model.layers.*``, ``visual.*``, ``lm_head.weight``, what ``save_pretrained``
writes) and transformers 5's in-memory one (``model.language_model.*``, ``model.visual.*``). Blocks and layers
fill rows of stacked leaves (scanned layers).
"""

from __future__ import annotations

from jaxprobe.families.decoder_keys import LEAF, decoder_rules
from jaxprobe.weights.rules import Rule, RuleKeyMap

ALIASES = (("model.language_model.", "model."), ("model.visual.", "visual."))
VISION_RULES = (
    Rule(r"visual\.patch_embed\.proj\.weight", ("vision", "patch_embed"), "conv"),
    Rule(rf"visual\.blocks\.(?P<layer>\d+)\.(?P<norm>norm1|norm2){LEAF}", ("vision", "blocks", "{norm}"), "norm"),
    Rule(rf"visual\.blocks\.(?P<layer>\d+)\.attn\.(?P<proj>qkv|proj){LEAF}", ("vision", "blocks", "{proj}")),
    Rule(rf"visual\.blocks\.(?P<layer>\d+)\.mlp\.(?P<proj>\w+){LEAF}", ("vision", "blocks", "mlp", "{proj}")),
    Rule(rf"visual\.merger\.ln_q{LEAF}", ("connector", "ln_q"), "norm"),
    Rule(rf"visual\.merger\.mlp\.(?P<index>0|2){LEAF}", ("connector", "mlp_{index}")),
)


def keymap(tie_word_embeddings: bool) -> RuleKeyMap:
    return RuleKeyMap((*VISION_RULES, *decoder_rules("model.", "lm_head.weight", tie_word_embeddings)), ALIASES)
