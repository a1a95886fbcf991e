"""HF tensor names of Qwen2-VL / Qwen2.5-VL -> our params tree (``VisionLanguageModel``).

Accepts the hub layout that ``save_pretrained`` writes (``model.layers.*``, ``visual.*``, ``lm_head.weight``)
and the transformers-5 in-memory layout (``model.language_model.*``, ``model.visual.*``). Module paths follow
one rule: ``a.b.3.c`` -> ``a / b_3 / c``; weights of norms become ``scale``, of embeddings ``embedding``, of
linear layers a transposed ``kernel``; the conv3d patch embedding becomes a matmul kernel.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxprobe.weights.keymap import ParamTarget, identity, transpose_linear

PREFIXES = (("model.language_model.", ("model",)), ("model.visual.", ("visual",)), ("model.", ("model",)),
            ("visual.", ("visual",)), ("lm_head.", ("lm_head",)))
NORM_MODULES = ("norm", "norm1", "norm2", "ln_q", "input_layernorm", "post_attention_layernorm")


def flatten_patch_kernel(array: np.ndarray) -> np.ndarray:
    """conv3d weight [D, C, T, P, P] -> Dense kernel [C*T*P*P, D] (the processor flattens patches as C, T, P, P)."""
    return np.ascontiguousarray(array.reshape(array.shape[0], -1).T)


def module_path(dotted: str) -> tuple[str, ...]:
    """``blocks.3.attn.qkv`` -> (``blocks_3``, ``attn``, ``qkv``)."""
    path: list[str] = []
    for part in dotted.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path)


@dataclasses.dataclass(frozen=True)
class QwenVLKeyMap:
    """The ``KeyMap`` of both Qwen-VL families (their layouts differ only in module names, which map 1:1)."""

    tie_word_embeddings: bool

    def targets(self, name: str) -> list[ParamTarget] | None:
        for prefix, root in PREFIXES:
            if name.startswith(prefix):
                *modules, leaf = (*root, *module_path(name[len(prefix):]))
                break
        else:
            return None
        if modules == ["lm_head"] and self.tie_word_embeddings:
            return []  # tied: the logits reuse the embedding matrix
        modules = tuple(modules)
        if leaf == "bias":
            return [ParamTarget((*modules, "bias"))]
        if leaf != "weight":
            return None
        if modules[-1] == "embed_tokens":
            return [ParamTarget((*modules, "embedding"))]
        if modules[-1] in NORM_MODULES:
            return [ParamTarget((*modules, "scale"))]
        if modules[-2:] == ("patch_embed", "proj"):
            return [ParamTarget((*modules[:-1], "kernel"), flatten_patch_kernel)]
        return [ParamTarget((*modules, "kernel"), transpose_linear)]


__all__ = ["QwenVLKeyMap", "flatten_patch_kernel", "identity", "module_path"]
