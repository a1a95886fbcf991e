"""Tensor names of both LLaVA layouts -> our params tree, and the documented renaming between them.

Canonical names are the llava-hf hub layout (``language_model.model.*``, ``language_model.lm_head.weight``,
``multi_modal_projector.linear_{1,2}.*``, ``vision_tower.vision_model.*``, what the 2024-era conversions hold).
Aliases bring the other layouts there:
- transformers 5 (in memory and in newer conversions): ``model.language_model.*``, ``model.vision_tower.*``,
  ``model.multi_modal_projector.*``, ``lm_head.weight``; its ``save_pretrained`` also drops the tower's inner
  ``vision_model.``;
- the LLaVA repository (``REPOSITORY_TO_HF``, the renaming the parity reference uses to load a repository
  checkpoint in transformers' ``LlavaForConditionalGeneration``):

  | LLaVA repository (``llava_llama``, ...)          | llava-hf                                 |
  |--------------------------------------------------|------------------------------------------|
  | ``model.mm_projector.0.{weight,bias}``           | ``multi_modal_projector.linear_1.*``     |
  | ``model.mm_projector.2.{weight,bias}``           | ``multi_modal_projector.linear_2.*``     |
  | ``model.vision_tower.vision_tower.vision_model.*``| ``vision_tower.vision_model.*``          |
  | ``model.*`` (embed_tokens, layers, norm)         | ``language_model.model.*``               |
  | ``lm_head.weight``                               | ``language_model.lm_head.weight``        |

One alias table serves every layout: the longer ``model.*`` prefixes are tried before the repository's catch-all
``model.``, so no name is ambiguous, and a checkpoint mixing layouts fills some leaf twice or leaves one empty,
which the loader's plan refuses.
"""

from __future__ import annotations

from jaxprobe.families.decoder_keys import LEAF, decoder_rules
from jaxprobe.families.vit_keys import vit_rules
from jaxprobe.weights.rules import Rule, RuleKeyMap

REPOSITORY_TO_HF = (  # (LLaVA repository prefix, llava-hf prefix), first match wins
    ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
    ("model.vision_tower.vision_tower.", "vision_tower."),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
ALIASES = (  # stored prefix -> the prefix our rules match (the tower without its inner vision_model.)
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower."),  # repository
    ("model.vision_tower.vision_model.", "vision_tower."),  # transformers 5
    ("model.vision_tower.", "vision_tower."),  # transformers 5
    ("vision_tower.vision_model.", "vision_tower."),  # llava-hf hub
    ("model.language_model.", "language_model.model."),  # transformers 5
    ("model.multi_modal_projector.", "multi_modal_projector."),  # transformers 5
    ("model.mm_projector.0.", "multi_modal_projector.linear_1."),  # repository
    ("model.mm_projector.2.", "multi_modal_projector.linear_2."),  # repository
    ("model.", "language_model.model."),  # repository: the LLM, after every longer model.* prefix
    ("lm_head.", "language_model.lm_head."),  # transformers 5 and repository
)


def to_llava_hf(name: str) -> str:
    """A repository-layout tensor name in the llava-hf layout (``REPOSITORY_TO_HF``)."""
    for stored, renamed in REPOSITORY_TO_HF:
        if name.startswith(stored):
            return renamed + name[len(stored):]
    return name


def keymap(tie_word_embeddings: bool) -> RuleKeyMap:
    rules = (
        *vit_rules("vision_tower.", post_norm=False),  # LLaVA reads hidden_states[k]: no final LayerNorm
        Rule(r"vision_tower\.embeddings\.position_ids", ("vision",), skip=True),  # an arange buffer older saves hold
        Rule(rf"multi_modal_projector\.(?P<linear>linear_[12]){LEAF}", ("connector", "{linear}")),
        *decoder_rules("language_model.model.", "language_model.lm_head.weight", tie_word_embeddings),
    )
    return RuleKeyMap(rules, ALIASES)
