"""Site registry, glob selection and pooling."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe.capture.sites import pool_sites, select_sites, sites_for
from jaxprobe.errors import ConfigError

SOWN = ["vision.layer_00", "vision.layer_01", "connector.output", "llm.layer_00", "llm.layer_01"]


def test_registry_and_selection():
    sites = sites_for(SOWN)
    assert [s.name for s in sites][-4:] == ["llm.layer_00.image_mean", "llm.layer_00.last_token",
                                            "llm.layer_01.image_mean", "llm.layer_01.last_token"]
    chosen = select_sites(sites, ["llm.*.last_token", "vision.*", "vision.layer_00"])
    assert [s.name for s in chosen] == ["vision.layer_00", "vision.layer_01", "llm.layer_00.last_token",
                                        "llm.layer_01.last_token"]
    with pytest.raises(ConfigError, match="matches no site"):
        select_sites(sites, ["llm.*.cls"])


def test_pooling_matches_numpy():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 7, 4)).astype(np.float32)
    patches = rng.normal(size=(2, 5, 4)).astype(np.float32)
    mask = np.zeros((2, 7), bool)
    mask[0, 1:4], mask[1, 2:6] = True, True
    last = np.array([5, 6])
    sown = {"vision.layer_00": jnp.asarray(patches), "llm.layer_00": jnp.asarray(hidden)}
    sites = select_sites(sites_for(["vision.layer_00", "llm.layer_00"]), ["*"])
    pooled = pool_sites(sites, sown, jnp.asarray(mask), jnp.asarray(last))
    np.testing.assert_allclose(pooled["vision.layer_00"], patches.mean(1), rtol=1e-6)
    np.testing.assert_allclose(pooled["llm.layer_00.image_mean"][1], hidden[1, 2:6].mean(0), rtol=1e-6)
    np.testing.assert_allclose(pooled["llm.layer_00.last_token"], hidden[[0, 1], last], rtol=1e-6)
    cls = sites_for(["vision.layer_00"], vision_cls=True)
    np.testing.assert_allclose(pool_sites(cls, sown, mask, last)["vision.layer_00"], patches[:, 0])
