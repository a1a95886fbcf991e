"""LoRA adapters: every linear layer of models/ is the LoRA-aware Dense, a fresh adapter changes nothing, the LoRA
forward equals the merged weights' forward, targets and shardings follow the config and the family's rules."""

from __future__ import annotations

import ast
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import PartitionSpec

from jaxprobe.errors import ConfigError
from jaxprobe.families.loading import load_model
from jaxprobe.families.registry import family_by_name
from jaxprobe.finetune.lora import LoraSpec, init_lora, join_lora, lora_shardings, merge_lora, split_lora
from jaxprobe.models.config import RunPlan
from jaxprobe.models.layers import LORA_DROPOUT
from jaxprobe.parallel import make_mesh

MODELS = Path(__file__).resolve().parents[1] / "jaxprobe" / "models"
LLM = (r"decoder/layers/(self_attn/[qkvo]_proj|mlp/(gate|up|down)_proj)/kernel",)
EVERY = (r"(vision|connector|decoder)/.+",)  # every linear layer (one compilation shared by several tests)


def test_no_module_of_models_uses_nn_dense():
    """Every linear layer must be models.layers.Dense, or LoRA could not adapt it (families landing new towers
    and connectors included)."""
    offences = []
    for path in sorted(MODELS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "Dense" and isinstance(node.value, ast.Name):
                offences.append(f"{path.relative_to(MODELS)}:{node.lineno} uses {node.value.id}.Dense")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flax") and any(
                    alias.name == "Dense" for alias in node.names):
                offences.append(f"{path.relative_to(MODELS)}:{node.lineno} imports Dense from {node.module}")
    assert not offences, "use jaxprobe.models.layers.Dense:\n" + "\n".join(offences)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    family = family_by_name("qwen_vl")
    directory = family.tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen2_5_vl", seed=3)
    loaded = load_model(directory, cache_dir=False)
    inputs = jax.tree.map(jnp.asarray, family.synthetic_inputs(loaded.config, batch=2, seed=1))
    return family, loaded, inputs


def trained(lora: dict, seed: int = 1, size: float = 0.05) -> dict:
    """The adapter with random factors, as after some training (B is no longer zero)."""
    trainable, constants = split_lora(lora)
    leaves, tree = jax.tree.flatten(trainable)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [leaf + size * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys, strict=True)]
    return join_lora(jax.tree.unflatten(tree, noisy), constants)


@functools.cache
def _forward(module):
    """One jitted forward per module (every logits call below reuses its compilation)."""
    return jax.jit(lambda variables, inputs, rngs: module.apply(variables, inputs, True, rngs=rngs))


def logits(loaded, inputs, lora=None, params=None, rngs=None):
    variables = {"params": loaded.params if params is None else params, **({"lora": lora} if lora else {})}
    return np.asarray(_forward(loaded.module())(variables, inputs, rngs))


def test_default_targets_adapt_the_llm_only(tiny):
    _, loaded, _ = tiny
    lora = init_lora(jax.random.key(0), loaded.params, LoraSpec(4, 8.0, 0.0, LLM))
    paths = traverse_util.flatten_dict(lora)
    assert {path[:-1] for path in paths} == {("decoder", "layers", group, name) for group, names in
                                             (("self_attn", "qkvo"), ("mlp", ("gate", "up", "down")))
                                             for name in (f"{n}_proj" for n in names)}
    q = lora["decoder"]["layers"]["self_attn"]["q_proj"]
    kernel = loaded.params["decoder"]["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q["a"].shape == (*kernel.shape[:-1], 4) and q["b"].shape == (*kernel.shape[:-2], 4, kernel.shape[-1])
    assert not np.asarray(q["b"]).any() and np.asarray(q["a"]).std() > 0
    np.testing.assert_array_equal(q["scale"], 2.0)
    with pytest.raises(ConfigError, match="matches no kernel"):
        init_lora(jax.random.key(0), loaded.params, LoraSpec(4, 8.0, 0.0, ("decoder/layers/attn/q/kernel",)))
    with pytest.raises(ConfigError, match="not a valid regex"):
        init_lora(jax.random.key(0), loaded.params, LoraSpec(4, 8.0, 0.0, ("decoder/(",)))


def test_a_fresh_adapter_changes_nothing(tiny):
    _, loaded, inputs = tiny
    lora = init_lora(jax.random.key(0), loaded.params, LoraSpec(4, 8.0, 0.1, EVERY))
    np.testing.assert_array_equal(logits(loaded, inputs, lora), logits(loaded, inputs))


def test_lora_forward_equals_merged_weights_forward(tiny):
    _, loaded, inputs = tiny
    lora = trained(init_lora(jax.random.key(0), loaded.params, LoraSpec(4, 8.0, 0.0, EVERY)))
    adapted = logits(loaded, inputs, lora)
    assert np.abs(adapted - logits(loaded, inputs)).max() > 0.1  # the adapter does something
    np.testing.assert_allclose(adapted, logits(loaded, inputs, params=merge_lora(loaded.params, lora)), atol=1e-5)


def test_lora_dropout_only_with_its_rng(tiny):
    _, loaded, inputs = tiny
    lora = trained(init_lora(jax.random.key(0), loaded.params, LoraSpec(4, 8.0, 0.5, EVERY)))
    plain = logits(loaded, inputs, lora)
    dropped = [logits(loaded, inputs, lora, rngs={LORA_DROPOUT: jax.random.key(k)}) for k in (1, 2)]
    assert np.abs(dropped[0] - plain).max() > 1e-3 and np.abs(dropped[0] - dropped[1]).max() > 1e-3
    flat = traverse_util.flatten_dict(lora)
    still = traverse_util.unflatten_dict({path: jnp.zeros_like(leaf) if path[-1] == "dropout" else leaf
                                          for path, leaf in flat.items()})
    np.testing.assert_allclose(logits(loaded, inputs, still, rngs={LORA_DROPOUT: jax.random.key(1)}),
                               logits(loaded, inputs, still), atol=1e-6)  # rate 0: nothing dropped


def test_a_partial_forward_slices_the_adapter_like_the_params(tiny):
    """A plan that runs only the first decoder layer reads only that layer's adapter rows."""
    _, loaded, inputs = tiny
    lora = trained(init_lora(jax.random.key(0), loaded.params, LoraSpec(4, 8.0, 0.0, LLM)))
    variables = {"params": loaded.params, "lora": lora}
    _, partial = loaded.module(RunPlan(loaded.config.vision.depth, 1, logits=False)).apply(
        variables, inputs, mutable=["intermediates"])
    _, full = loaded.module().apply(variables, inputs, mutable=["intermediates"])
    first = partial["intermediates"]["decoder"]["layers"]["llm.layers"][0]
    np.testing.assert_allclose(first[0], full["intermediates"]["decoder"]["layers"]["llm.layers"][0][0], atol=1e-5)


def test_adapters_are_sharded_like_the_kernels_they_adapt(tiny):
    family, loaded, inputs = tiny
    mesh = make_mesh(2, 4)
    sharded = load_model(loaded.checkpoint, mesh=mesh, cache_dir=False)
    lora = trained(init_lora(jax.random.key(0), loaded.params, LoraSpec(4, 8.0, 0.0, LLM)))
    shardings = lora_shardings(mesh, family.sharding_rules(loaded.config), loaded.params, lora)
    placed = jax.device_put(lora, shardings)
    attention, mlp = placed["decoder"]["layers"]["self_attn"], placed["decoder"]["layers"]["mlp"]
    assert attention["q_proj"]["a"].sharding.spec == PartitionSpec(None, None, None)  # q: column-parallel
    assert attention["q_proj"]["b"].sharding.spec == PartitionSpec(None, None, "model")
    assert mlp["down_proj"]["a"].sharding.spec == PartitionSpec(None, "model", None)  # down: row-parallel
    assert mlp["down_proj"]["b"].sharding.spec == PartitionSpec(None, None, None)
    np.testing.assert_allclose(logits(sharded, inputs, placed), logits(loaded, inputs, lora), atol=1e-5)


def test_peft_export_loads_into_transformers_with_the_same_logits(tiny, tmp_path):
    """The adapter exported for PEFT, loaded with ``peft`` into transformers' model, gives our LoRA logits."""
    import peft  # the test extra (pyproject.toml)

    from jaxprobe.finetune.peft import CONFIG_FILE, export_peft

    family, loaded, inputs = tiny
    spec = LoraSpec(4, 8.0, 0.0, (*LLM, r"vision/blocks/(qkv|proj)/kernel"))
    lora = trained(init_lora(jax.random.key(0), loaded.params, spec))
    meta = {"rank": spec.rank, "alpha": spec.alpha, "dropout": spec.dropout}
    out = export_peft(tmp_path / "peft", lora, meta, loaded.checkpoint, family.keymap(loaded.config), "tiny")
    reference = family.reference()
    model = reference.load(loaded.checkpoint)
    plain = reference.run(model, inputs)["logits"]
    peft_model = peft.PeftModel.from_pretrained(model, out).eval()
    adapted = reference.run(peft_model.base_model.model, inputs)["logits"]
    ours = logits(loaded, inputs, lora)
    assert np.abs(adapted - plain).max() > 0.1  # PEFT found and applied the adapter
    np.testing.assert_allclose(adapted, ours, atol=1e-4)
    assert len(json.loads((out / CONFIG_FILE).read_text())["target_modules"]) == 7 * loaded.config.text.num_layers + \
        2 * loaded.config.vision.depth
