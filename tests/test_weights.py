"""Checkpoint reading, mapping, dtype policy, sharded placement, the orbax cache, Hub resolution and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxprobe.errors import CheckpointError
from jaxprobe.weights import cache as wcache
from jaxprobe.weights.hub import resolve_source
from jaxprobe.weights.keymap import ParamTarget, transpose_linear
from jaxprobe.weights.loader import load_params, resolve_dtype
from jaxprobe.weights.reader import INDEX_FILE, SINGLE_FILE, iter_tensors
from jaxprobe.weights.rules import Rule, RuleKeyMap

SHAPES = {
    "dense0.weight": (16, 8),  # torch Linear [out, in] -> kernel [8, 16]
    "dense0.bias": (16,),
    "dense1.weight": (8, 16),
    "dense1.bias": (8,),
    "norm.weight": (8,),
    "rotary.inv_freq": (4,),  # a buffer real checkpoints carry and models skip
}
SKIPPED = {"rotary.inv_freq"}


class DottedKeyMap:
    """Test family: ``a.b.weight`` (2-D) -> ``(a, b, kernel)`` transposed, other names -> their dotted path."""

    def targets(self, name: str) -> list[ParamTarget] | None:
        if name in SKIPPED:
            return []
        if name not in SHAPES:
            return None
        *module, leaf = name.split(".")
        if leaf == "weight" and len(SHAPES[name]) == 2:
            return [ParamTarget((*module, "kernel"), transpose_linear)]
        return [ParamTarget((*module, "scale" if leaf == "weight" else leaf))]


def param_path(name: str) -> tuple[str, ...]:
    return DottedKeyMap().targets(name)[0].path


def abstract_params() -> dict:
    tree: dict = {}
    for name, shape in SHAPES.items():
        if name in SKIPPED:
            continue
        *module, leaf = param_path(name)
        node = tree
        for part in module:
            node = node.setdefault(part, {})
        node[leaf] = jax.ShapeDtypeStruct(shape[::-1], np.float32)
    return tree


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}


def write_single(directory: Path, values: dict[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(values, directory / SINGLE_FILE)
    (directory / "config.json").write_text(json.dumps({"model_type": "dotted"}))
    return directory


def write_sharded(directory: Path, values: dict[str, np.ndarray], shards: int = 3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    names = sorted(values)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: values[n] for n in names[i::shards]}
        save_file(part, directory / file)
        weight_map |= dict.fromkeys(part, file)
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps({"model_type": "dotted"}))
    return directory


def load(directory: Path, **kwargs) -> dict:
    return load_params(directory, DottedKeyMap(), abstract_params(), **kwargs)


def leaves(params: dict) -> dict[str, np.ndarray]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def test_load_maps_transposes_and_skips(tmp_path):
    values = tensors()
    params = load(write_single(tmp_path / "ckpt", values))
    np.testing.assert_array_equal(params["dense0"]["kernel"], values["dense0.weight"].T)
    np.testing.assert_array_equal(params["dense1"]["bias"], values["dense1.bias"])
    np.testing.assert_array_equal(params["norm"]["scale"], values["norm.weight"])
    assert "rotary" not in params


def test_reader_agrees_with_safetensors_for_every_dtype(tmp_path):
    rng = np.random.default_rng(1)
    values = {
        "f16": rng.normal(size=(3, 5)).astype(np.float16),
        "i64": rng.integers(-9, 9, size=(7,)).astype(np.int64),
        "u8": rng.integers(0, 255, size=(2, 2, 2)).astype(np.uint8),
        "scalar": np.array(3.5, dtype=np.float64),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(values, tmp_path / SINGLE_FILE)
    got = {name: array for name, _, array in iter_tensors(tmp_path)}
    with safe_open(tmp_path / SINGLE_FILE, framework="numpy") as handle:
        for name in values:
            np.testing.assert_array_equal(got[name], handle.get_tensor(name))
            assert got[name].dtype == values[name].dtype


def test_bfloat16_source_and_policy(tmp_path):
    import torch
    from safetensors.torch import save_file as torch_save

    values = tensors()
    torch_save({n: torch.from_numpy(v).to(torch.bfloat16) for n, v in values.items()}, tmp_path / SINGLE_FILE)
    params32 = load(tmp_path, dtype="float32")
    params16 = load(tmp_path, dtype="bfloat16")
    assert params32["dense0"]["kernel"].dtype == np.float32
    assert params16["dense0"]["kernel"].dtype == ml_dtypes.bfloat16
    want = values["dense0.weight"].T.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(params32["dense0"]["kernel"]), want)
    np.testing.assert_array_equal(np.asarray(params16["dense0"]["kernel"]).astype(np.float32), want)


def test_dtype_policy_rejects_unknown():
    assert resolve_dtype("BF16") == ml_dtypes.bfloat16
    with pytest.raises(CheckpointError, match="float16"):
        resolve_dtype("float16")


def test_sharded_checkpoint_loads_like_single_file(tmp_path):
    values = tensors()
    single = leaves(load(write_single(tmp_path / "single", values)))
    sharded_dir = write_sharded(tmp_path / "sharded", values)
    assert len({file for _, file, _ in iter_tensors(sharded_dir)}) == 3
    sharded = leaves(load(sharded_dir))
    assert single.keys() == sharded.keys()
    for key in single:
        np.testing.assert_array_equal(single[key], sharded[key])


def kernel_sharding(mesh: Mesh):
    def sharding_for(path):
        return NamedSharding(mesh, PartitionSpec(None, "model")) if path[-1] == "kernel" else None

    return sharding_for


def test_tensors_placed_with_requested_sharding(tmp_path):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("model",))
    directory = write_sharded(tmp_path / "ckpt", tensors(), shards=2)
    params = load(directory, sharding_for=kernel_sharding(mesh))
    kernel = params["dense0"]["kernel"]
    assert kernel.sharding == NamedSharding(mesh, PartitionSpec(None, "model"))
    assert len(kernel.addressable_shards) == 8
    assert kernel.addressable_shards[0].data.shape == (8, 2)
    assert params["norm"]["scale"].sharding.device_set == {jax.devices()[0]}
    unsharded = leaves(load(directory))
    for key, value in leaves(params).items():
        np.testing.assert_array_equal(value, unsharded[key])


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda v: v.pop("dense1.bias"), r"lacks 1 parameter.*dense1/bias"),
        (lambda v: v.update({"extra.weight": np.ones(3, np.float32)}), r"unexpected tensor 'extra.weight' in .*model"),
        (lambda v: v.update({"norm.weight": np.ones(9, np.float32)}), r"'norm.weight' in .*model.safetensors.*\(8,\)"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_bad_tensors_name_tensor_and_file(tmp_path, edit, pattern):
    values = tensors()
    edit(values)
    with pytest.raises(CheckpointError, match=pattern):
        load(write_single(tmp_path / "ckpt", values))


def test_truncated_file_names_file_and_leaves_cache_clean(tmp_path):
    directory = write_sharded(tmp_path / "ckpt", tensors(), shards=2)
    shard = directory / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    cache_root = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002.safetensors.*truncated"):
        wcache.load_or_convert(directory, cache_root, "float32", lambda: load(directory), "dotted/1")
    assert not cache_root.exists() or list(cache_root.iterdir()) == []


def test_garbage_header_is_a_checkpoint_error(tmp_path):
    (tmp_path / SINGLE_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match=r"model.safetensors.*not JSON"):
        list(iter_tensors(tmp_path))


def test_index_with_missing_shard_or_misplaced_tensor(tmp_path):
    directory = write_sharded(tmp_path / "ckpt", tensors(), shards=3)
    index = json.loads((directory / INDEX_FILE).read_text())
    index["weight_map"]["norm.weight"] = "model-00001-of-00003.safetensors"
    (directory / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"'norm.weight'.*model-00001-of-00003.safetensors.*does not contain"):
        load(directory)
    (directory / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00003-of-00003.safetensors.*not in"):
        load(directory)
    index["weight_map"]["norm.weight"] = "../elsewhere.safetensors"
    (directory / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"outside"):
        load(directory)


def test_cache_converts_once_then_restores_with_sharding(tmp_path):
    directory = write_single(tmp_path / "ckpt", tensors())
    cache_root = tmp_path / "cache"
    calls = []

    def convert():
        calls.append(1)
        return load(directory)

    first = wcache.load_or_convert(directory, cache_root, "float32", convert, "dotted/1", source="my/model",
                                   revision="abc")
    assert not first.hit and len(calls) == 1
    manifest = json.loads((first.entry / wcache.MANIFEST_FILE).read_text())
    assert manifest["source"] == "my/model" and manifest["revision"] == "abc" and manifest["dtype"] == "float32"
    assert manifest["fingerprint"] == wcache.fingerprint(directory) and manifest["converter_version"] == "dotted/1"

    mesh = Mesh(np.array(jax.devices()), ("model",))
    second = wcache.load_or_convert(directory, cache_root, "float32", convert, "dotted/1",
                                    sharding_for=kernel_sharding(mesh))
    assert second.hit and len(calls) == 1 and second.entry == first.entry
    assert second.params["dense1"]["kernel"].sharding == NamedSharding(mesh, PartitionSpec(None, "model"))
    for key, value in leaves(first.params).items():
        np.testing.assert_array_equal(value, leaves(second.params)[key])

    assert wcache.load_or_convert(directory, cache_root, "bfloat16", convert, "dotted/1").entry != first.entry
    assert len(calls) == 2
    assert not wcache.load_or_convert(directory, cache_root, "float32", convert, "dotted/2").hit  # new converter
    stamp = os.stat(directory / SINGLE_FILE).st_mtime_ns + 10**9
    os.utime(directory / SINGLE_FILE, ns=(stamp, stamp))
    assert not wcache.load_or_convert(directory, cache_root, "float32", convert, "dotted/1").hit
    assert [p.name for p in cache_root.iterdir() if p.name.startswith(wcache.TMP_PREFIX)] == []


def test_failed_convert_writes_nothing_and_stale_temporaries_are_swept(tmp_path):
    directory = write_single(tmp_path / "ckpt", tensors())
    cache_root = tmp_path / "cache"
    stale = cache_root / f"{wcache.TMP_PREFIX}999999999-dead"  # no such pid: a killed conversion's leftovers
    stale.mkdir(parents=True)

    def convert():
        raise CheckpointError("bad checkpoint")

    with pytest.raises(CheckpointError, match="bad checkpoint"):
        wcache.load_or_convert(directory, cache_root, "float32", convert, "dotted/1")
    assert list(cache_root.iterdir()) == []


def test_convert_checkpoint_uses_family_hook(tmp_path):
    directory = write_single(tmp_path / "ckpt", tensors())
    seen = []

    def converter_for(config):
        seen.append(config["model_type"])
        return wcache.Converter(DottedKeyMap(), abstract_params(), "dotted/1")

    result = wcache.convert_checkpoint(str(directory), tmp_path / "out", "bfloat16", converter_for=converter_for)
    assert seen == ["dotted"] and result.manifest["dtype"] == "bfloat16" and result.manifest["revision"] is None
    assert result.params["dense0"]["kernel"].dtype == ml_dtypes.bfloat16
    again = wcache.convert_checkpoint(str(directory), tmp_path / "out", "bf16", converter_for=converter_for)
    assert again.hit and again.params["dense0"]["kernel"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(np.asarray(again.params["dense0"]["kernel"]), result.params["dense0"]["kernel"])


def test_hub_offline_uncached_gives_clear_message(tmp_path):
    with pytest.raises(CheckpointError, match=r"'someorg/not-cached'.*offline.*hf download someorg/not-cached"):
        resolve_source("someorg/not-cached", cache_dir=tmp_path / "hf")


def test_hub_cached_snapshot_resolves_offline(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--someorg--cached"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert resolve_source("someorg/cached", cache_dir=tmp_path / "hf") == (snapshot, commit)


def test_local_sources(tmp_path):
    assert resolve_source(tmp_path) == (tmp_path, None)
    with pytest.raises(CheckpointError, match="local directory"):
        resolve_source(tmp_path, revision="main")
    with pytest.raises(CheckpointError, match="not a directory"):
        resolve_source(str(tmp_path / "missing" / "dir"))


def test_cache_entry_in_chunks_restores_identically(tmp_path):
    params = load(write_single(tmp_path / "ckpt", tensors()))
    assert len(list(wcache.chunk_leaves(params, chunk_bytes=300))) >= 3
    entry = wcache.write_entry(tmp_path / "cache", "key", params, {"source": "x"}, chunk_bytes=300)
    assert len(list((entry / wcache.PARAMS_DIR).iterdir())) >= 3
    restored = leaves(wcache.restore_entry(entry))
    for key, value in leaves(params).items():
        np.testing.assert_array_equal(value, restored[key])


def test_damaged_cache_entry_is_a_checkpoint_error(tmp_path):
    directory = write_single(tmp_path / "ckpt", tensors())
    first = wcache.load_or_convert(directory, tmp_path / "cache", "float32", lambda: load(directory), "dotted/1")
    chunk = next((first.entry / wcache.PARAMS_DIR).iterdir())
    for path in chunk.rglob("*"):
        if path.is_file() and "METADATA" not in path.name:
            path.unlink()
    with pytest.raises(CheckpointError, match=r"cannot be restored.*delete that directory"):
        wcache.load_or_convert(directory, tmp_path / "cache", "float32", lambda: load(directory), "dotted/1")


STACKED_RULES = RuleKeyMap((Rule(r"layers\.(?P<layer>\d+)\.proj\.weight", ("layers", "proj")),
                            Rule(r"layers\.(?P<layer>\d+)\.norm\.weight", ("layers", "norm"), "norm")))
LAYERS, WIDTH = 4, 8


def stacked_abstract(layers: int = LAYERS) -> dict:
    return {"layers": {"proj": {"kernel": jax.ShapeDtypeStruct((layers, WIDTH, 2 * WIDTH), np.float32)},
                       "norm": {"scale": jax.ShapeDtypeStruct((layers, WIDTH), np.float32)}}}


def stacked_tensors(layers: int = LAYERS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for i in range(layers):
        out[f"layers.{i}.proj.weight"] = rng.normal(size=(2 * WIDTH, WIDTH)).astype(np.float32)
        out[f"layers.{i}.norm.weight"] = rng.normal(size=(WIDTH,)).astype(np.float32)
    return out


def test_stacked_leaves_fill_row_by_row_and_shard(tmp_path):
    values = stacked_tensors()
    directory = write_single(tmp_path / "ckpt", values)
    mesh = Mesh(np.array(jax.devices()), ("model",))

    def sharding(path):
        return NamedSharding(mesh, PartitionSpec(None, None, "model")) if path[-1] == "kernel" else None

    params = load_params(directory, STACKED_RULES, stacked_abstract(), sharding_for=sharding)
    kernel = params["layers"]["proj"]["kernel"]
    assert kernel.sharding.spec == PartitionSpec(None, None, "model") and len(kernel.addressable_shards) == 8
    scale = np.asarray(params["layers"]["norm"]["scale"])
    for i in range(LAYERS):
        np.testing.assert_array_equal(np.asarray(kernel)[i], values[f"layers.{i}.proj.weight"].T)
        np.testing.assert_array_equal(scale[i], values[f"layers.{i}.norm.weight"])


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda v: v.pop("layers.2.proj.weight"), r"lacks 1 parameter.*layers/proj/kernel layers \[2\]"),
    (lambda v: v.update({"layers.7.norm.weight": v["layers.0.norm.weight"]}), r"layer 7, but the config has 4"),
])
def test_stacked_rows_missing_or_out_of_range_are_named(tmp_path, edit, pattern):
    values = stacked_tensors()
    edit(values)
    with pytest.raises(CheckpointError, match=pattern):
        load_params(write_single(tmp_path / "ckpt", values), STACKED_RULES, stacked_abstract())


def test_a_row_filled_twice_is_named(tmp_path):
    twice = RuleKeyMap((*STACKED_RULES.rules, Rule(r"extra\.(?P<layer>\d+)\.weight", ("layers", "norm"), "norm")))
    values = {**stacked_tensors(), "extra.1.weight": np.ones(WIDTH, np.float32)}
    pattern = r"'(layers.1.norm|extra.1).weight'.* fills layers/norm/scale, already filled"
    with pytest.raises(CheckpointError, match=pattern):
        load_params(write_single(tmp_path / "ckpt", values), twice, stacked_abstract())


def test_leaves_larger_than_a_chunk_are_saved_in_row_blocks_and_restored_sharded(tmp_path):
    """A leaf over the chunk size is saved as row blocks (orbax copies a multi-GB array whole while saving it) and
    restored into one buffer, whichever axis the restore shards."""
    from flax import traverse_util

    rng = np.random.default_rng(0)
    params = {"stack": {"kernel": jnp.asarray(rng.standard_normal((6, 8, 4), np.float32))},
              "embed": jnp.asarray(rng.standard_normal((16, 8), np.float32)),
              "bias": jnp.asarray(rng.standard_normal((8,), np.float32))}
    entry = wcache.write_entry(tmp_path / "cache", "key", params, {"source": "x"}, chunk_bytes=200)
    saved = " ".join((chunk / "_METADATA").read_text() for chunk in (entry / wcache.PARAMS_DIR).iterdir())
    assert "kernel@rows" in saved and "embed@rows" in saved and "bias@rows" not in saved
    from jaxprobe.parallel import make_mesh

    mesh = make_mesh(2, 4)
    specs = {("stack", "kernel"): PartitionSpec(None, "model"), ("embed",): PartitionSpec("model", None),
             ("bias",): PartitionSpec()}
    restored = wcache.restore_entry(entry, lambda path: NamedSharding(mesh, specs[path]))
    restored = traverse_util.flatten_dict(restored)
    assert set(restored) == set(specs)
    for path, value in traverse_util.flatten_dict(params).items():
        np.testing.assert_array_equal(np.asarray(restored[path]), np.asarray(value))
        assert restored[path].sharding.spec == specs[path]
