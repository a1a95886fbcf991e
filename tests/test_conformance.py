"""The conformance suite every registered family passes (DESIGN.md: "what adding a family means").

For each family in ``jaxprobe.families.registry.FAMILIES`` a module ``tests/families/<name>.py`` supplies cases:
tiny checkpoints written by transformers (PyTorch) with unusual shapes, and inputs for them. Checked here: the key
map fills every leaf exactly once, the family's own tiny checkpoints round-trip through transformers, every site
and the logits match the PyTorch reference within 1e-4 (float32), token bookkeeping holds (padding on either
side), and 1 device, 8 devices and model-sharded params agree.
"""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxprobe.capture.forward import PooledForward, apply_sown, sown_shapes
from jaxprobe.capture.generate import Sampling
from jaxprobe.capture.sites import select_sites, sites_for
from jaxprobe.families.loading import abstract_params, load_model
from jaxprobe.families.registry import FAMILIES
from jaxprobe.parallel import make_mesh
from jaxprobe.parity import run_parity
from jaxprobe.weights.loader import plan_load
from jaxprobe.weights.reader import checkpoint_headers, read_config_json

ATOL = 1e-4


def cases_of(family) -> object:
    return importlib.import_module(f"tests.families.{family.name}")


PARITY = [(family, case) for family in FAMILIES for case in cases_of(family).CASES]
ROUND_TRIP = [(family, model_type) for family in FAMILIES for model_type in family.model_types]


def test_every_registered_family_has_conformance_cases():
    for family in FAMILIES:
        module = cases_of(family)
        assert family.name == module.FAMILY
        uncovered = set(family.model_types) - {module.CASES[case][0] for case in module.CASES}
        assert not uncovered, f"{family.name}: no parity case for {uncovered}"


@pytest.mark.parametrize(("family", "case"), PARITY, ids=[case for _, case in PARITY])
def test_parity_of_every_site_and_the_logits(tmp_path, family, case):
    module = cases_of(family)
    directory, inputs = module.build(case, tmp_path)
    report = run_parity(directory, ATOL, inputs=inputs)
    vision_depth, llm_depth = module.depths(case)
    assert len(report.max_abs) == vision_depth + llm_depth + 2  # + connector and logits
    assert report.passed, report.table()
    assert report.next_token_kl < 1e-6


GENERATION = [(family, case) for family, case in PARITY if "left-padded" in case or "tied" in case]


@pytest.mark.parametrize(("family", "case"), GENERATION, ids=[case for _, case in GENERATION])
def test_greedy_generation_equals_transformers(tmp_path, family, case):
    """Token for token, including batches padded on the left with prompts of different lengths."""
    from jaxprobe.capture.generate import Sampling, generate

    directory, inputs = cases_of(family).build(case, tmp_path)
    loaded = load_model(directory, cache_dir=False)
    reference = family.reference()
    expected = reference.generate(reference.load(directory), inputs, max_new_tokens=12)
    np.testing.assert_array_equal(generate(loaded, inputs, Sampling(max_new_tokens=12), eos=()), expected)


def test_right_padded_rows_generate_as_left_padded_ones(tmp_path):
    """Cached decoding needs left padding; right-padded inputs are realigned, not decoded from a pad slot."""
    from jaxprobe.capture.generate import Sampling, generate, left_align

    family, case = next((f, c) for f, c in PARITY if "right-padded" in c)
    directory, inputs = cases_of(family).build(case, tmp_path)
    loaded = load_model(directory, cache_dir=False)
    aligned = left_align(inputs)
    assert (np.asarray(aligned.attention_mask)[:, -1] == 1).all() and not np.asarray(inputs.attention_mask)[:, -1].any()
    reference = family.reference()
    expected = reference.generate(reference.load(directory), aligned, max_new_tokens=6)
    np.testing.assert_array_equal(generate(loaded, inputs, Sampling(max_new_tokens=6), eos=()), expected)


BF16_RELATIVE = 0.03  # bf16 carries 8 bits of mantissa (0.4%); a few roundings per layer stay within 3% of the scale
BF16 = [(family, case) for family, case in PARITY if "window" in case or "gqa" in case]


@pytest.mark.parametrize(("family", "case"), BF16, ids=[case for _, case in BF16])
def test_bfloat16_forward_matches_transformers_bfloat16(tmp_path, family, case):
    """bf16 end to end (pixels and vision tower included) against transformers' own bf16 forward: every site
    and the logits within 3% of the reference's largest magnitude."""
    from jaxprobe.parity import jax_activations

    directory, inputs = cases_of(family).build(case, tmp_path)
    loaded = load_model(directory, "bfloat16", cache_dir=False)
    ours = jax_activations(loaded, inputs)
    reference = family.reference()
    expected = reference.run(reference.load(directory, "bfloat16"), inputs)
    valid = np.asarray(inputs.attention_mask).astype(bool)
    for site, value in expected.items():
        mine = np.asarray(ours[site], np.float32).reshape(value.shape)
        if site.startswith("llm.") or site == "logits":
            mine, value = mine[valid], value[valid]
        assert np.abs(mine - value).max() <= BF16_RELATIVE * np.abs(value).max(), site


@pytest.mark.parametrize(("family", "case"), PARITY[:1] + PARITY[-1:], ids=lambda x: getattr(x, "name", x))
def test_keymap_fills_every_leaf_exactly_once(tmp_path, family, case):
    directory, _ = cases_of(family).build(case, tmp_path)
    config = family.parse_config(read_config_json(directory))
    abstract = abstract_params(family, config)
    plan = plan_load(directory, family.keymap(config), abstract)
    leaves = traverse_util.flatten_dict(abstract)
    assert set(plan) == set(leaves)
    for path, pieces in plan.items():
        rows = [piece.layer for piece in pieces]
        assert rows == [None] or sorted(rows) == list(range(leaves[path].shape[0])), path
    stored = {name for infos in checkpoint_headers(directory).values() for name in infos}
    mapped = {piece.name for pieces in plan.values() for piece in pieces}
    skipped = {name for name in stored if family.keymap(config).targets(name) == []}
    assert stored == mapped | skipped


@pytest.mark.parametrize(("family", "model_type"), ROUND_TRIP, ids=[m for _, m in ROUND_TRIP])
def test_tiny_checkpoint_round_trip(tmp_path, family, model_type):
    """The family's torch-free tiny checkpoint loads in transformers with every tensor used (through the family's
    reference, which loads strictly, where transformers has no class for the model_type), and passes parity on
    inputs from its own processor."""
    from transformers import CONFIG_MAPPING, AutoModelForImageTextToText

    directory = family.tiny_checkpoint(tmp_path, model_type, seed=3)
    if model_type in CONFIG_MAPPING:
        _, info = AutoModelForImageTextToText.from_pretrained(directory, output_loading_info=True)
        assert {k: v for k, v in info.items() if v} == {}
    else:
        family.reference().load(directory)
    report = run_parity(directory, ATOL)
    assert report.passed, report.table()


@pytest.fixture(scope="module", params=ROUND_TRIP, ids=[m for _, m in ROUND_TRIP])
def tiny(request, tmp_path_factory):
    family, model_type = request.param
    directory = family.tiny_checkpoint(tmp_path_factory.mktemp(model_type), model_type, seed=1)
    processor = family.processor(directory)
    prompt = processor.prompt(["normal", "benign", "malignant"], "Which?\n{options}\nAnswer with the letter.")
    from jaxprobe.data.synthetic import SyntheticSpec, render_image

    images = [render_image(SyntheticSpec(image_size=48), i, i, i % 3) for i in range(3)]
    return family, directory, prompt, processor.encode(prompt, images)


def test_token_bookkeeping(tiny):
    """One image span per row as long as the connector's output; the last index is the prompt's last token; a
    connector-only forward (no LLM run) gives the same connector features as the full one."""
    family, directory, prompt, inputs = tiny
    loaded = load_model(directory, cache_dir=False)
    _, sown = jax.jit(lambda p, x: apply_sown(loaded.module(), p, x))(loaded.params, jax.tree.map(np.asarray, inputs))
    tokens = sown["connector.output"].shape[1]
    assert (np.asarray(inputs.image_mask).sum(1) == tokens).all()
    ids, mask = np.asarray(inputs.input_ids), np.asarray(inputs.attention_mask)
    rows = np.arange(len(ids))
    assert (mask.cumsum(1)[rows, inputs.last_index] == mask.sum(1)).all() and (mask[rows, inputs.last_index] == 1).all()
    prompt_ids = family.processor(directory).tokenizer(prompt.text, add_special_tokens=False).input_ids
    assert (ids[rows, inputs.last_index] == prompt_ids[-1]).all()
    connector_only = PooledForward(loaded, select_sites(sites_for(sown_shapes(family, loaded.config)),
                                                        ["connector.output"]), answer=False, mesh=None)
    assert connector_only.plan.text_layers == 0 and not connector_only.plan.logits
    output = connector_only(inputs)
    np.testing.assert_allclose(output.features["connector.output"], np.asarray(sown["connector.output"]).mean(1),
                               atol=1e-6)


def test_one_eight_devices_and_sharded_params_agree(tiny):
    family, directory, prompt, inputs = tiny

    def forward(mesh):
        loaded = load_model(directory, mesh=mesh, cache_dir=False)
        sites = select_sites(sites_for(sown_shapes(family, loaded.config)), ["*"])
        sampling = Sampling(max_new_tokens=5)
        forward = PooledForward(loaded, sites, answer=True, mesh=mesh, sampling=sampling)
        return loaded, forward(inputs, prompt.option_token_ids)

    _, one = forward(make_mesh(1, 1))
    _, eight = forward(make_mesh(8, 1))
    sharded, split = forward(make_mesh(2, 4))
    for name in one.features:
        np.testing.assert_allclose(eight.features[name], one.features[name], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(split.features[name], one.features[name], atol=1e-5, err_msg=name)
    for other in (eight, split):
        np.testing.assert_allclose(other.option_probs, one.option_probs, atol=1e-6)
        np.testing.assert_array_equal(other.tokens, one.tokens)  # generation works sharded too
    kernel = sharded.params["decoder"]["layers"]["mlp"]["up_proj"]["kernel"]
    assert kernel.sharding.spec[-1] == "model" and len(kernel.addressable_shards) == 8


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_parity_command_on_a_bare_save_pretrained_checkpoint(tmp_path, family, capsys):
    """A checkpoint with only config.json and weights (no tokenizer or processor files) still passes
    ``jaxprobe parity``, on the family's synthetic inputs, and says so."""
    from jaxprobe.cli import main

    module = cases_of(family)
    directory, _ = module.build(next(iter(module.CASES)), tmp_path)
    assert main(["parity", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "PASS at atol 0.0001" in out and "synthetic" in out


def test_params_split_eight_ways(tiny):
    """With ``mesh.model=8`` each device holds at most 1/8 of the params + 10% (what does not divide, and small
    norms and biases, stays replicated)."""
    _, directory, _, _ = tiny
    loaded = load_model(directory, mesh=make_mesh(1, 8), cache_dir=False)
    leaves = jax.tree.leaves(loaded.params)
    first = jax.devices()[0]
    on_first = sum(shard.data.nbytes for leaf in leaves for shard in leaf.addressable_shards if shard.device == first)
    assert on_first <= 1.1 * sum(leaf.nbytes for leaf in leaves) / 8


LORA_EVERY_LINEAR = (r"(vision|connector|decoder)/.+/kernel",)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_lora_forward_equals_merged_forward(tmp_path, family):
    """LoRA on every linear layer of the family's model (tower, connector, decoder) equals the merged weights'
    forward; the default targets (configs/demo.py: the LLM's q/k/v/o/gate/up/down, and the vision baseline's tower
    blocks) each find their kernels in every family."""
    from jaxprobe.config import load_config
    from jaxprobe.finetune.lora import init_lora, join_lora, merge_lora, split_lora, target_kernels
    from jaxprobe.finetune.settings import LoraSpec

    directory = family.tiny_checkpoint(tmp_path / "ckpt", family.model_types[0], seed=1)
    loaded = load_model(directory, cache_dir=False)
    defaults = load_config("demo").finetune
    llm = target_kernels(loaded.params, defaults.lora.targets)
    assert {path[-2] for path in llm} == {f"{name}_proj" for name in ("q", "k", "v", "o", "gate", "up", "down")}
    assert target_kernels(loaded.params, defaults.vision.lora.targets)
    trainable, constants = split_lora(init_lora(jax.random.key(0), loaded.params,
                                                LoraSpec(2, 4.0, 0.0, LORA_EVERY_LINEAR)))
    trainable = jax.tree.map(lambda leaf: leaf + 0.05 * jax.random.normal(jax.random.key(1), leaf.shape), trainable)
    lora = join_lora(trainable, constants)
    inputs = jax.tree.map(jax.numpy.asarray, family.synthetic_inputs(loaded.config, batch=2, seed=1))
    forward = jax.jit(lambda variables: loaded.module().apply(variables, inputs, True))
    plain, adapted = forward({"params": loaded.params}), forward({"params": loaded.params, "lora": lora})
    merged = forward({"params": merge_lora(loaded.params, lora)})
    assert np.abs(np.asarray(adapted) - np.asarray(plain)).max() > 0.1
    np.testing.assert_allclose(np.asarray(adapted), np.asarray(merged), atol=1e-5)
