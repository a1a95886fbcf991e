"""The shared decoder against transformers' text models, layer by layer: Llama, Mistral (a sliding window shorter
than the prompt), Qwen2 (q/k/v bias), Qwen3 (QK-norm, explicit head_dim) and Gemma 3 (1 + w norms, sandwich norms,
scaled embeddings, local/global layers with their own rotary tables, linear rope scaling, tied embeddings), on a
batch padded on the left. Every family whose LLM is one of these reuses exactly this module and translation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxprobe.families.decoder_config import text_config
from jaxprobe.families.decoder_keys import decoder_rules
from jaxprobe.models.config import TextConfig
from jaxprobe.models.decoders.decoder import Attend, Decoder
from jaxprobe.weights.loader import load_params
from jaxprobe.weights.rules import RuleKeyMap

VOCAB = 512
BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, initializer_range=0.1)
CASES = {
    "llama-gqa": (transformers.LlamaConfig, dict(BASE, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                          "rope_theta": 5e6})),
    "mistral-window4": (transformers.MistralConfig, dict(BASE, sliding_window=4)),
    "qwen2-bias-mqa": (transformers.Qwen2Config, dict(BASE, num_key_value_heads=1)),
    "qwen3-qknorm-hd24": (transformers.Qwen3Config, dict(BASE, head_dim=24, tie_word_embeddings=True)),
    "gemma3-local-global": (transformers.Gemma3TextConfig, dict(
        BASE, head_dim=16, num_hidden_layers=4, sliding_window=4, query_pre_attn_scalar=24, tie_word_embeddings=True,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})),
}


class LanguageModel(nn.Module):
    """Just the decoder: ids -> logits at every position, with ``llm.layers`` sown."""

    config: TextConfig

    @nn.compact
    def __call__(self, ids, mask, positions):
        decoder = Decoder(self.config, self.config.num_layers, name="decoder")
        return decoder.logits(decoder(decoder.embed(ids), positions, Attend(mask)))


def _reference(case: str, tmp_path):
    config_class, values = CASES[case]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**values)).eval()
    with torch.no_grad():  # norms start at 0 or 1 and biases at 0; perturb them so their mapping is tested too
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(tmp_path)
    return model


def _inputs(batch: int = 3, length: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (batch, length))
    mask = np.ones((batch, length), np.int64)
    for row in range(batch):
        mask[row, : 2 * row] = 0  # left padding of 0, 2, 4 tokens
    positions = np.clip(mask.cumsum(1) - 1, 0, None)
    return ids, mask, positions


@pytest.mark.parametrize("case", list(CASES))
def test_every_layer_and_the_logits_match_transformers(tmp_path, case):
    reference = _reference(case, tmp_path)
    config = text_config(reference.config, "test")
    ids, mask, positions = _inputs()
    with torch.no_grad():
        out = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        position_ids=torch.from_numpy(positions), output_hidden_states=True)
    model = LanguageModel(config)
    keymap = RuleKeyMap(decoder_rules("model.", "lm_head.weight", config.tie_word_embeddings, config.sandwich_norms))
    abstract = jax.eval_shape(model.init, jax.random.key(0), ids, mask, positions[:, None])["params"]
    params = load_params(tmp_path, keymap, abstract)
    logits, state = model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask),
                                jnp.asarray(positions[:, None]), mutable=["intermediates"])
    hidden = np.asarray(state["intermediates"]["decoder"]["layers"]["llm.layers"][0])
    valid = mask.astype(bool)
    for layer in range(config.num_layers - 1):  # transformers' last hidden state is after the final norm
        expected = out.hidden_states[layer + 1].numpy()
        np.testing.assert_allclose(hidden[layer][valid], expected[valid], atol=1e-4, err_msg=f"layer {layer}")
    np.testing.assert_allclose(np.asarray(logits)[valid], out.logits.numpy()[valid], atol=1e-4)
