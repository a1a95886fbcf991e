"""The site registry: which sown intermediate becomes which probed vector, and how it is pooled.

Models sow full activations under raw names (``vision.layer_07`` [B, P, D], ``connector.output`` [B, I, D],
``llm.layer_12`` [B, T, D]). A *site* is a raw activation plus a pooling: vision layers are averaged over patches
(or their CLS token taken where the tower has one), the connector over the image tokens, and every LLM layer
gives two sites, ``.image_mean`` and ``.last_token``. Pooling runs inside the jitted forward, so only [B, D]
vectors of the selected sites ever leave the device.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxprobe.errors import ConfigError

MEAN_PATCHES, CLS_TOKEN, IMAGE_MEAN, LAST_TOKEN = "mean_patches", "cls", "image_mean", "last_token"


@dataclasses.dataclass(frozen=True)
class Site:
    name: str  # e.g. llm.layer_03.last_token
    source: str  # the sown name, e.g. llm.layer_03
    pooling: str


def sites_for(sown: Iterable[str], vision_cls: bool = False) -> list[Site]:
    """All sites a model offers, in model order, from the names it sows."""
    sites = []
    for name in sown:
        if name.startswith("vision."):
            sites.append(Site(name, name, CLS_TOKEN if vision_cls else MEAN_PATCHES))
        elif name.startswith("connector."):
            sites.append(Site(name, name, MEAN_PATCHES))
        elif name.startswith("llm."):
            sites += [Site(f"{name}.{IMAGE_MEAN}", name, IMAGE_MEAN), Site(f"{name}.{LAST_TOKEN}", name, LAST_TOKEN)]
    return sites


def select_sites(sites: Sequence[Site], patterns: Sequence[str]) -> list[Site]:
    """Sites matching any glob (``vision.*``, ``llm.*.last_token``); a pattern matching nothing is an error."""
    chosen = []
    for pattern in patterns:
        hits = [site for site in sites if fnmatch.fnmatchcase(site.name, pattern)]
        if not hits:
            examples = ", ".join(site.name for site in sites[:4])
            raise ConfigError(f"site pattern {pattern!r} matches no site of this model (e.g. {examples}, ...)")
        chosen += [site for site in hits if site not in chosen]
    order = {site.name: k for k, site in enumerate(sites)}
    return sorted(chosen, key=lambda site: order[site.name])


def pool(site: Site, activation: jax.Array, image_mask: jax.Array, last_index: jax.Array) -> jax.Array:
    """[B, D] float32 vector of one site; image_mask [B, T] marks image tokens, last_index [B] the last prompt token."""
    activation = activation.astype(jnp.float32)
    if site.pooling == MEAN_PATCHES:
        return activation.mean(axis=1)
    if site.pooling == CLS_TOKEN:
        return activation[:, 0]
    if site.pooling == IMAGE_MEAN:
        weights = image_mask.astype(jnp.float32)
        return jnp.einsum("btd,bt->bd", activation, weights) / weights.sum(1, keepdims=True)
    if site.pooling == LAST_TOKEN:
        return jnp.take_along_axis(activation, last_index[:, None, None], axis=1)[:, 0]
    raise ValueError(f"unknown pooling {site.pooling!r}")


def pool_sites(sites: Sequence[Site], sown: Mapping[str, jax.Array], image_mask: jax.Array,
               last_index: jax.Array) -> dict[str, jax.Array]:
    """Pool every selected site from the sown activations (call inside jit: the rest is dead code)."""
    return {site.name: pool(site, sown[site.source], image_mask, last_index) for site in sites}
