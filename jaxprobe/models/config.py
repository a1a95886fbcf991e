"""Module configs: frozen dataclasses of plain numbers and feature flags, never a transformers object.

A family's config translation (``jaxprobe.families.<family>.config``) fills these from ``config.json`` and refuses
what the modules do not implement; the modules switch behaviour on the flags here, never on a family name.
"""

from __future__ import annotations

import dataclasses

DEFAULT_ROPE_THETA = 10000.0


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """A vision tower. ``tower`` picks the architecture file in ``models/towers``; the rest are its flags."""

    tower: str  # "qwen_vit" (Qwen2-VL / Qwen2.5-VL), "vit" (CLIP, SigLIP), "navit" (Hulu-Med, VideoLLaMA3)
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    hidden_act: str
    patch_size: int
    in_channels: int = 3
    temporal_patch_size: int = 1
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "plain"  # "plain": fc2(act(fc1 x)); "gated": down(act(gate x) * up x)
    norm_eps: float = 1e-6
    rope_theta: float = DEFAULT_ROPE_THETA
    window_size: int = 0  # pixels; 0: every block attends over the whole image (Qwen2.5-VL: windowed blocks)
    fullatt_block_indexes: tuple[int, ...] = ()
    merge_size: int = 1  # side of the patch block one connector token is made from
    # "vit" towers (CLIP, SigLIP):
    image_size: int = 0  # learned position embeddings cover (image_size / patch_size)^2 patches (+1 with CLS)
    class_token: bool = False  # CLIP: a CLS token first, and a pre-encoder LayerNorm (``pre_norm``)
    patch_bias: bool = True  # the patch embedding conv has a bias (SigLIP yes, CLIP no)
    pre_norm: bool = False
    post_norm: bool = False  # apply the final LayerNorm to the features the connector reads (SigLIP/Gemma 3)
    feature_layer: int = -1  # which block's output the connector reads (LLaVA: -2)
    drop_cls: bool = True  # the connector reads patches only (LLaVA's "default" selection)

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class ConnectorConfig:
    """The projection from vision features to the LLM's embedding width."""

    kind: str  # "patch_merger" (Qwen-VL), "mlp2x_gelu" (LLaVA, Hulu-Med), "avg_pool" (Gemma 3)
    in_size: int
    out_size: int
    norm: str = "layernorm"
    norm_eps: float = 1e-6
    merge_size: int = 1  # patch_merger: merge x merge patches per token; avg_pool: the pooling kernel


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """A decoder-only LLM."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    norm_eps: float
    rope_theta: float
    rope_kind: str = "default"  # "default": 1-D positions [B, 1, T]; "mrope": (t, h, w) positions [B, 3, T]
    mrope_section: tuple[int, ...] = ()
    rope_scaling: float = 1.0  # linear rope scaling of the full-attention layers: positions / factor
    qkv_bias: bool = False  # q/k/v projections (Qwen2: yes; Llama: attention_bias)
    o_bias: bool = False  # output projection (Llama's attention_bias)
    mlp_bias: bool = False
    qk_norm: bool = False  # RMSNorm over each head of q and k before the rotary (Qwen3, Gemma 3)
    norm_scale_offset: bool = False  # Gemma: every RMSNorm scales by (1 + w), in float32
    sandwich_norms: bool = False  # Gemma 2/3: norms after attention and after the MLP too
    embed_scale: bool = False  # Gemma: token embeddings times sqrt(hidden_size) (in the embedding dtype)
    attention_scale: float | None = None  # None: head_dim ** -0.5 (Gemma 3: query_pre_attn_scalar ** -0.5)
    layer_types: tuple[str, ...] = ()  # per layer "full_attention" | "sliding_attention"; (): all full
    sliding_window: int = 0  # keys within the last ``sliding_window`` slots, for sliding layers
    local_rope_theta: float | None = None  # rope theta of sliding layers (unscaled); None: ``rope_theta``
    bidirectional_image_attention: bool = False  # Gemma 3: the tokens of one image attend to each other
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False

    @property
    def sliding_layers(self) -> tuple[bool, ...]:
        return tuple(kind == "sliding_attention" for kind in self.layer_types) or (False,) * self.num_layers


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    """Tower + connector + decoder, and the token that marks where image embeddings go."""

    vision: VisionConfig
    connector: ConnectorConfig
    text: TextConfig
    image_token_id: int
    remat: bool = False  # recompute each block's activations in the backward pass (fine-tuning long sequences)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What one forward computes: the first ``vision_layers`` / ``text_layers`` blocks and optionally logits.

    Capture derives it from the selected sites (nothing after the last selected layer when the answer is not
    asked for; no LLM at all for vision-only selections), so skipped layers cost nothing.
    """

    vision_layers: int
    text_layers: int  # 0: stop after the connector (no LLM)
    logits: bool = True  # logits at each row's ``last_index`` (the answer position)
    connector: bool = True

    @classmethod
    def full(cls, config: VLMConfig) -> RunPlan:
        return cls(config.vision.depth, config.text.num_layers)
