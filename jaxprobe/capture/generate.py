"""Generated answers: a jitted prefill + ``lax.while_loop`` of cached one-token steps.

The batch is padded on the left, so every row's next token goes to the same cache slot; each row's rotary
position continues from the largest position of its prompt (Qwen M-RoPE: the image's (t, h, w) span makes that
larger than the token count; plain 1-D positions: the count of real tokens). Greedy by default; temperature and
top-p sampling take an explicit ``jax.random`` key. A row stops at an EOS token; the loop stops when every row
has, or after ``max_new_tokens``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.families.base import ModelInputs


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How to pick each token (static: one compilation per setting)."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy (argmax)
    top_p: float = 1.0  # nucleus sampling when temperature > 0: keep the smallest set of tokens with mass >= top_p


def eos_token_ids(checkpoint_dir: str | Path, tokenizer: Any = None) -> tuple[int, ...]:
    """End-of-turn ids from ``generation_config.json`` (as transformers' generate uses them), else config.json,
    else the tokenizer's eos token."""
    for name in ("generation_config.json", "config.json"):
        path = Path(checkpoint_dir) / name
        value = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
        if value is not None:
            return tuple(value) if isinstance(value, list) else (int(value),)
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        return (int(tokenizer.eos_token_id),)
    return ()


def next_positions(inputs: ModelInputs) -> jax.Array:
    """[B] the rotary position of each row's first generated token: its prompt's largest position + 1."""
    valid = inputs.attention_mask.astype(bool)[:, None, :]
    return jnp.max(jnp.where(valid, inputs.positions, -1), axis=(1, 2)) + 1


def pick(logits: jax.Array, key: jax.Array, sampling: Sampling) -> jax.Array:
    """[B] next tokens from logits [B, V]."""
    if sampling.temperature <= 0:
        return jnp.argmax(logits, axis=-1)
    scaled = logits / sampling.temperature
    if sampling.top_p < 1.0:
        order = jnp.argsort(-scaled, axis=-1)
        sorted_logits = jnp.take_along_axis(scaled, order, axis=-1)
        mass = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        keep_sorted = (mass - jax.nn.softmax(sorted_logits, axis=-1)) < sampling.top_p  # the top token always stays
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(len(order))[:, None], order].set(keep_sorted)
        scaled = jnp.where(keep, scaled, -jnp.inf)
    return jax.random.categorical(key, scaled, axis=-1)


def decode_loop(params, module, inputs: ModelInputs, logits: jax.Array, cache, key: jax.Array, sampling: Sampling,
                eos: tuple[int, ...]) -> jax.Array:
    """Tokens [B, max_new_tokens] after a ``prefill`` of ``inputs`` gave ``logits`` [B, V] and ``cache`` (traceable:
    capture's forward runs it in the same jit as the pooled sites)."""
    batch, length = inputs.input_ids.shape
    size = length + sampling.max_new_tokens
    key_valid = jnp.zeros((batch, size), bool).at[:, :length].set(inputs.attention_mask.astype(bool))
    start, axes = next_positions(inputs), inputs.positions.shape[1]
    pad = eos[0] if eos else 0

    def running(carry):
        step, _, _, _, done, _, _ = carry
        return (step < sampling.max_new_tokens) & ~jnp.all(done)

    def step_once(carry):
        step, cache, key_valid, logits, done, tokens, key = carry
        key, sub = jax.random.split(key)
        token = jnp.where(done, pad, pick(logits, sub, sampling))
        tokens = tokens.at[:, step].set(token)
        done = done | jnp.isin(token, jnp.asarray(eos, token.dtype)) if eos else done
        key_valid = key_valid.at[:, length + step].set(True)
        positions = jnp.broadcast_to((start + step)[:, None], (batch, axes))
        logits, state = module.apply({"params": params, "cache": cache}, token, positions, key_valid, length + step,
                                     method=module.decode, mutable=["cache"])
        return step + 1, state["cache"], key_valid, logits, done, tokens, key

    tokens = jnp.full((batch, sampling.max_new_tokens), pad, jnp.int32)
    carry = (jnp.zeros((), jnp.int32), cache, key_valid, logits, jnp.zeros(batch, bool), tokens, key)
    return jax.lax.while_loop(running, step_once, carry)[5]


@functools.partial(jax.jit, static_argnames=("module", "sampling", "eos"))
def _generate(params, inputs: ModelInputs, key: jax.Array, module, sampling: Sampling, eos: tuple[int, ...]):
    size = inputs.input_ids.shape[1] + sampling.max_new_tokens
    logits, state = module.apply({"params": params}, inputs, size, method=module.prefill, mutable=["cache"])
    return decode_loop(params, module, inputs, logits, state["cache"], key, sampling, eos)


def left_align(inputs: ModelInputs) -> ModelInputs:
    """The same rows padded on the left (each row's real tokens moved to the end), as cached decoding needs."""
    mask = np.asarray(inputs.attention_mask).astype(bool)
    shift = mask.shape[1] - 1 - np.asarray(inputs.last_index)  # padding after the last real token
    if not shift.any():
        return inputs

    def roll(array: np.ndarray) -> np.ndarray:
        array = np.asarray(array)
        return np.stack([np.roll(row, int(k), axis=-1) for row, k in zip(array, shift, strict=True)])

    return inputs.replace(input_ids=roll(inputs.input_ids), attention_mask=roll(inputs.attention_mask),
                          positions=roll(inputs.positions), image_mask=roll(inputs.image_mask),
                          last_index=np.full(len(shift), mask.shape[1] - 1, np.int32))


def generate(loaded: Any, inputs: ModelInputs, sampling: Sampling, eos: Sequence[int],
             key: jax.Array | None = None) -> np.ndarray:
    """Generated token ids [B, max_new_tokens]; after a row's EOS, EOS fills the rest. Right-padded rows are
    moved to the left first."""
    key = jax.random.key(0) if key is None else key
    tokens = _generate(loaded.params, jax.tree.map(jnp.asarray, left_align(inputs)), key, loaded.module(), sampling,
                       tuple(int(t) for t in eos))
    return np.asarray(tokens)


def trim(tokens: np.ndarray, eos: Sequence[int]) -> list[list[int]]:
    """Each row's tokens up to (without) its first EOS."""
    rows = []
    for row in np.asarray(tokens).tolist():
        stop = next((i for i, token in enumerate(row) if token in eos), len(row))
        rows.append(row[:stop])
    return rows
