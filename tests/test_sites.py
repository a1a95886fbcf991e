"""Site registry (from sown shapes), glob selection and pooling."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe.capture.sites import pool_sites, select_sites, sites_for
from jaxprobe.errors import ConfigError

SOWN = {"vision.layers": (2, 1, 16, 32), "connector.output": (1, 4, 64), "llm.layers": (2, 1, 9, 64)}


def test_registry_and_selection():
    sites = sites_for(SOWN)
    assert [s.name for s in sites] == ["vision.layer_00", "vision.layer_01", "connector.output",
                                       "llm.layer_00.image_mean", "llm.layer_00.last_token",
                                       "llm.layer_01.image_mean", "llm.layer_01.last_token"]
    assert [s.dim for s in sites] == [32, 32, 64, 64, 64, 64, 64]
    chosen = select_sites(sites, ["llm.*.last_token", "vision.*", "vision.layer_00"])
    assert [s.name for s in chosen] == ["vision.layer_00", "vision.layer_01", "llm.layer_00.last_token",
                                        "llm.layer_01.last_token"]
    with pytest.raises(ConfigError, match="matches no site"):
        select_sites(sites, ["llm.*.cls"])


def test_layer_names_pad_to_the_depth():
    assert sites_for({"llm.layers": (100, 1, 3, 8)})[-1].name == "llm.layer_99.last_token"
    sites = sites_for({"llm.layers": (101, 1, 3, 8)})
    assert sites[0].name == "llm.layer_000.image_mean" and sites[-1].name == "llm.layer_100.last_token"


def test_pooling_matches_numpy():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(1, 2, 7, 4)).astype(np.float32)
    patches = rng.normal(size=(1, 2, 5, 4)).astype(np.float32)
    mask = np.zeros((2, 7), bool)
    mask[0, 1:4], mask[1, 2:6] = True, True
    last = np.array([5, 6])
    sown = {"vision.layers": jnp.asarray(patches), "llm.layers": jnp.asarray(hidden)}
    sites = select_sites(sites_for({k: v.shape for k, v in sown.items()}), ["*"])
    pooled = pool_sites(sites, sown, jnp.asarray(mask), jnp.asarray(last))
    np.testing.assert_allclose(pooled["vision.layer_00"], patches[0].mean(1), rtol=1e-6)
    np.testing.assert_allclose(pooled["llm.layer_00.image_mean"][1], hidden[0, 1, 2:6].mean(0), rtol=1e-6)
    np.testing.assert_allclose(pooled["llm.layer_00.last_token"], hidden[0, [0, 1], last], rtol=1e-6)


def test_cls_towers_pool_patches_without_the_cls_token():
    patches = np.random.default_rng(1).normal(size=(1, 2, 5, 4)).astype(np.float32)
    sown = {"vision.layers": jnp.asarray(patches)}
    sites = sites_for({"vision.layers": patches.shape}, vision_cls=True)
    assert [s.name for s in sites] == ["vision.layer_00", "vision.layer_00.cls"]
    pooled = pool_sites(sites, sown, jnp.zeros((2, 3), bool), jnp.zeros(2, int), vision_cls=True)
    np.testing.assert_allclose(pooled["vision.layer_00"], patches[0, :, 1:].mean(1), rtol=1e-6)
    np.testing.assert_allclose(pooled["vision.layer_00.cls"], patches[0, :, 0])


@pytest.mark.parametrize("masked", [False, True])
def test_blockwise_attention_equals_direct(masked):
    """Long queries are attended block by block (bounded memory) with the same result."""
    from jaxprobe.models.layers import attention

    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 37, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(2, 37, 2, 8)), jnp.float32) for _ in range(2))
    mask = jnp.asarray(rng.random((2, 1, 1, 37, 37)) > 0.3) | jnp.eye(37, dtype=bool) if masked else None
    np.testing.assert_allclose(attention(q, k, v, mask, block=8), attention(q, k, v, mask), atol=1e-6)
