"""LoRA adapters as a tree beside the params: built, placed, merged and split without touching the params.

The ``lora`` variable collection mirrors the module paths of the adapted layers: for a kernel at
``decoder/layers/self_attn/q_proj/kernel`` of shape [L, in, out] (scanned layers stack on a leading axis) the
adapter is ``decoder/layers/self_attn/q_proj/{a [L, in, r], b [L, r, out], scale [L], dropout [L]}``, which the
LoRA-aware ``Dense`` reads (``W x + scale * B A x``). ``A`` starts small and random (PEFT's Kaiming-uniform
bound 1/sqrt(in)) and ``B`` at zero, so a fresh adapter changes nothing. Only ``a`` and ``b`` are trained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprobe.errors import ConfigError
from jaxprobe.finetune.settings import LoraSpec
from jaxprobe.parallel import SpecRules, fitting_spec, param_sharding

ParamPath = tuple[str, ...]
TRAINABLE = ("a", "b")  # the adapter's factors; "scale" (alpha / r) and "dropout" are constants
KERNEL = "kernel"


def joined(path: Sequence[str]) -> str:
    return "/".join(path)


def target_kernels(abstract_params: Mapping[str, Any], targets: Sequence[str]) -> list[ParamPath]:
    """Paths of the kernels the target regexes select, in a fixed order; a regex selecting nothing is refused
    (a typo must not train an adapter on nothing)."""
    kernels = sorted(path for path, leaf in traverse_util.flatten_dict(abstract_params).items()
                     if path[-1] == KERNEL and len(leaf.shape) >= 2)
    chosen = []
    for pattern in targets:
        try:
            hits = [path for path in kernels if re.fullmatch(pattern, joined(path))]
        except re.error as error:
            raise ConfigError(f"LoRA target {pattern!r} is not a valid regex: {error}") from error
        if not hits:
            examples = ", ".join(joined(path) for path in kernels[:3])
            raise ConfigError(f"LoRA target {pattern!r} matches no kernel of this model; kernels are "
                              f"'/'-joined param paths such as {examples}, ...")
        chosen += [path for path in hits if path not in chosen]
    return sorted(chosen)


def _factors(key: jax.Array, shape: Sequence[int], spec: LoraSpec) -> dict[str, jax.Array]:
    *lead, fan_in, fan_out = shape
    bound = fan_in**-0.5  # PEFT's kaiming_uniform_(a=sqrt(5)) on A: U(-1/sqrt(in), 1/sqrt(in))
    return {"a": jax.random.uniform(key, (*lead, fan_in, spec.rank), jnp.float32, -bound, bound),
            "b": jnp.zeros((*lead, spec.rank, fan_out), jnp.float32),
            "scale": jnp.full(lead, spec.scale, jnp.float32),
            "dropout": jnp.full(lead, spec.dropout, jnp.float32)}


def init_lora(key: jax.Array, abstract_params: Mapping[str, Any], spec: LoraSpec) -> dict[str, Any]:
    """A fresh adapter for every targeted kernel (float32 whatever the params' dtype; B = 0)."""
    flat = traverse_util.flatten_dict(abstract_params)
    adapters = {path[:-1]: _factors(jax.random.fold_in(key, number), flat[path].shape, spec)
                for number, path in enumerate(target_kernels(abstract_params, spec.targets))}
    return traverse_util.unflatten_dict({(*module, name): leaf for module, leaves in adapters.items()
                                         for name, leaf in leaves.items()})


def adapted_kernels(lora: Mapping[str, Any]) -> list[ParamPath]:
    """Kernel paths an adapter tree adapts."""
    return sorted({(*path[:-1], KERNEL) for path in traverse_util.flatten_dict(lora)})


def lora_shardings(mesh: Mesh, rules: SpecRules, abstract_params: Mapping[str, Any],
                   lora: Mapping[str, Any]) -> dict[str, Any]:
    """Shardings of an adapter tree: the kernel's spec on A's input dim and B's output dim (so ``x A`` and
    ``(x A) B`` need no more communication than ``x W``), its layer axis on the constants, rank replicated."""
    flat_params = traverse_util.flatten_dict(abstract_params)
    placed = {}
    for path, leaf in traverse_util.flatten_dict(lora).items():
        kernel = (*path[:-1], KERNEL)
        shape = flat_params[kernel].shape
        entries = tuple(param_sharding(mesh, rules, kernel, shape).spec)
        entries += (None,) * (len(shape) - len(entries))
        *lead, along_in, along_out = entries
        wanted = {"a": (*lead, along_in, None), "b": (*lead, None, along_out)}.get(path[-1], tuple(lead))
        placed[path] = NamedSharding(mesh, fitting_spec(mesh, leaf.shape, wanted))
    return traverse_util.unflatten_dict(placed)


def replicated(mesh: Mesh, tree: Any) -> Any:
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)


def split_lora(lora: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable factors, constants): only the first gets gradients and optimizer state."""
    flat = traverse_util.flatten_dict(lora)
    trainable = {path: leaf for path, leaf in flat.items() if path[-1] in TRAINABLE}
    constants = {path: leaf for path, leaf in flat.items() if path[-1] not in TRAINABLE}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(constants)


def join_lora(trainable: Mapping[str, Any], constants: Mapping[str, Any]) -> dict[str, Any]:
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(trainable),
                                         **traverse_util.flatten_dict(constants)})


def delta(adapter: Mapping[str, jax.Array]) -> jax.Array:
    """``scale * A B`` in float32, shaped like the kernel ([..., in, out])."""
    product = jnp.einsum("...ir,...ro->...io", adapter["a"].astype(jnp.float32), adapter["b"].astype(jnp.float32))
    return product * adapter["scale"].astype(jnp.float32)[..., None, None]


def _merged(params: dict[str, Any], lora: dict[str, Any]) -> dict[str, Any]:
    flat, adapters = traverse_util.flatten_dict(params), traverse_util.flatten_dict(lora)
    for kernel in adapted_kernels(lora):
        leaves = {name: adapters[(*kernel[:-1], name)] for name in ("a", "b", "scale")}
        flat[kernel] = (flat[kernel].astype(jnp.float32) + delta(leaves)).astype(flat[kernel].dtype)
    return traverse_util.unflatten_dict(flat)


def merge_lora(params: dict[str, Any], lora: dict[str, Any]) -> dict[str, Any]:
    """The params with every adapter folded into its kernel (``W + scale * A B``, summed in float32, cast back
    to the kernel's dtype): the fine-tuned model as plain weights, placed like the params."""
    shardings = jax.tree.map(lambda leaf: leaf.sharding, params)
    return jax.jit(_merged, out_shardings=shardings)(params, lora)
