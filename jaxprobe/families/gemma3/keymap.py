"""HF tensor names of Gemma 3 (``Gemma3ForConditionalGeneration``) -> our params tree.

Canonical names are the hub's legacy layout minus the tower's inner ``vision_model.``, which is what transformers
5's ``save_pretrained`` writes: ``language_model.model.*``, ``language_model.lm_head.weight`` (untied heads only),
``multi_modal_projector.*`` and ``vision_tower.*``. Aliases fold in the hub checkpoints' ``vision_tower.vision_model.*``
and transformers 5's in-memory names (``model.language_model.*``, ``model.vision_tower.*``, ``lm_head.weight``).
"""

from __future__ import annotations

from jaxprobe.families.decoder_keys import LEAF, decoder_rules
from jaxprobe.families.vit_keys import vit_rules
from jaxprobe.weights.rules import Rule, RuleKeyMap

ALIASES = (  # (stored prefix, canonical prefix): longest first, the first match wins
    ("model.vision_tower.vision_model.", "vision_tower."),
    ("vision_tower.vision_model.", "vision_tower."),
    ("model.vision_tower.", "vision_tower."),
    ("model.language_model.", "language_model.model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("lm_head.weight", "language_model.lm_head.weight"),
)
PROJECTOR_RULES = (
    Rule(rf"multi_modal_projector\.mm_soft_emb_norm{LEAF}", ("connector", "soft_emb_norm"), "norm"),
    # stored [in, out] (a plain parameter used as ``x @ w``), which is already a Dense kernel's layout
    Rule(r"multi_modal_projector\.mm_input_projection_weight", ("connector", "projection", "kernel"), "raw"),
)


def keymap(tie_word_embeddings: bool) -> RuleKeyMap:
    rules = (*vit_rules("vision_tower.", post_norm=True), *PROJECTOR_RULES,
             *decoder_rules("language_model.model.", "language_model.lm_head.weight", tie_word_embeddings,
                            sandwich_norms=True))
    return RuleKeyMap(rules, ALIASES)
