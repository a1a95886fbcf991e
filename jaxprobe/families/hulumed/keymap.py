"""Hulu-Med tensor names -> our params tree (``VisionLanguageModel`` with the ``navit`` tower).

Two layouts load. The hub's main branch (since 2025-10-15): ``model.vision_encoder.*`` (SigLIP names:
``embeddings.patch_embedding``, ``encoder.layers.N.*``, ``post_layernorm``), ``model.mm_projector.readout.{0,2}``
(Linear, GELU, Linear), the Qwen2/Qwen3 decoder under ``model.*`` and ``lm_head.weight`` (absent when tied). The
original training layout (older revisions, ModelScope copies) nests the encoder once more,
``model.vision_encoder.vision_encoder.*``, and is read through an alias.
"""

from __future__ import annotations

from jaxprobe.families.decoder_keys import LEAF, decoder_rules
from jaxprobe.families.vit_keys import vit_rules
from jaxprobe.weights.rules import Rule, RuleKeyMap

VISION_PREFIX = "model.vision_encoder."
ORIGINAL_VISION_PREFIX = "model.vision_encoder.vision_encoder."
ALIASES = ((ORIGINAL_VISION_PREFIX, VISION_PREFIX),)
PROJECTOR_RULES = (
    Rule(rf"model\.mm_projector\.readout\.0{LEAF}", ("connector", "linear_1")),
    Rule(rf"model\.mm_projector\.readout\.2{LEAF}", ("connector", "linear_2")),
)


def keymap(tie_word_embeddings: bool) -> RuleKeyMap:
    rules = (*vit_rules(VISION_PREFIX, post_norm=True), *PROJECTOR_RULES,
             *decoder_rules("model.", "lm_head.weight", tie_word_embeddings))
    return RuleKeyMap(rules, ALIASES)
