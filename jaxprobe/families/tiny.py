"""Shared pieces of tiny random checkpoints: random tensors, torch-style shape tables, a trained byte-level BPE.

The demo, the tests and the benchmarks need real-looking checkpoint directories that transformers itself loads
(config.json, safetensors named as ``save_pretrained`` names them, a tokenizer with the family's special tokens
and chat template). Each family's ``tiny.py`` says what its files hold; this module writes them offline, without
torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Shapes = dict[str, tuple[int, ...]]

INIT_STD = 0.1  # not HF's 0.02: a tiny random model then predicts the same token whatever the image
TOKENIZER_VOCAB = 448  # byte alphabet (256) + specials + merges learned from the corpus
CORPUS = (
    "The image shows a chest x-ray with no sign of pneumonia. A benign lesion is visible in the breast "
    "ultrasound; the malignant tumour has irregular margins. Normal lung tissue, covid infiltrates, "
    "pleural effusion, cardiomegaly, nodule, mass, atelectasis, consolidation, edema, emphysema, fibrosis. "
    "Dermatology: melanoma, nevus, basal cell carcinoma, keratosis. Pathology: adipose, background, debris, "
    "lymphocytes, mucus, smooth muscle, colon mucosa, stroma, adenocarcinoma epithelium. Retina: diabetic "
    "retinopathy, drusen, choroidal neovascularization. Blood cells: neutrophil, eosinophil, basophil, "
    "monocyte, platelet, erythroblast. Organ: liver, kidney, spleen, pancreas, bladder, femur, heart. "
    "Question: which class best describes this image? Answer with one word. A B C D yes no"
)


def linear(prefix: str, out_dim: int, in_dim: int, bias: bool = True) -> Shapes:
    """torch ``nn.Linear`` tensors: weight [out, in] (+ bias [out])."""
    shapes = {f"{prefix}.weight": (out_dim, in_dim)}
    if bias:
        shapes[f"{prefix}.bias"] = (out_dim,)
    return shapes


def norm(prefix: str, dim: int, bias: bool) -> Shapes:
    """LayerNorm (weight + bias) or RMSNorm (weight only)."""
    return {f"{prefix}.weight": (dim,), **({f"{prefix}.bias": (dim,)} if bias else {})}


def decoder_shapes(text: Mapping[str, Any], qkv_bias: bool) -> Shapes:
    """A Llama-style decoder (Llama, Mistral, Qwen2: q/k/v bias optional) under the ``model.*`` / ``lm_head``
    names that the LLaVA repository and transformers' legacy save_pretrained write."""
    hidden, inter, vocab = text["hidden_size"], text["intermediate_size"], text["vocab_size"]
    head_dim = text.get("head_dim") or hidden // text["num_attention_heads"]
    q_dim, kv_dim = text["num_attention_heads"] * head_dim, text["num_key_value_heads"] * head_dim
    shapes: Shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not text["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(text["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes |= norm(f"{p}.input_layernorm", hidden, bias=False)
        shapes |= norm(f"{p}.post_attention_layernorm", hidden, bias=False)
        for proj, width in (("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)):
            shapes |= linear(f"{p}.self_attn.{proj}", width, hidden, bias=qkv_bias)
        shapes |= linear(f"{p}.self_attn.o_proj", hidden, q_dim, bias=False)
        for proj, out_dim, in_dim in (("gate_proj", inter, hidden), ("up_proj", inter, hidden),
                                      ("down_proj", hidden, inter)):
            shapes |= linear(f"{p}.mlp.{proj}", out_dim, in_dim, bias=False)
    return shapes


def is_norm_scale(name: str) -> bool:
    return name.endswith(".weight") and any(k in name for k in ("norm", "ln_q", "layrnorm"))


def random_tensors(shapes: Shapes, seed: int) -> dict[str, np.ndarray]:
    """float32 N(0, INIT_STD) tensors; norm scales around 1 so activations neither vanish nor explode."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name in sorted(shapes):
        value = rng.normal(0.0, INIT_STD, size=shapes[name]).astype(np.float32)
        tensors[name] = value + np.float32(1.0) if is_norm_scale(name) else value
    return tensors


def write_tokenizer(out_dir: Path, special_tokens: Sequence[str], eos: str, pad: str, chat_template: str,
                    bos: str | None = None, named_tokens: Mapping[str, str] | None = None) -> None:
    """A byte-level BPE trained on a small medical corpus, with ``special_tokens`` at ids 0, 1, ...

    ``bos``: prepended to every encoded text, as Gemma's and Llama's tokenizers do. ``named_tokens``: model-specific
    named specials (e.g. Gemma 3's ``boi_token``), which the processor reads as ``tokenizer.boi_token(_id)``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([CORPUS], trainer=trainer)
    named = dict(named_tokens or {}) | ({"bos_token": bos, "add_bos_token": True} if bos else {})
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, pad_token=pad,
                                   extra_special_tokens=[t for t in special_tokens if t not in (eos, pad, bos)],
                                   **named)
    fast.chat_template = chat_template
    fast.save_pretrained(out_dir)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
