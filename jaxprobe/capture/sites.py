"""The site registry: which sown intermediate becomes which probed vector, and how it is pooled.

Models sow full activations: ``vision.layers`` [L, B, P, D] and ``llm.layers`` [L, B, T, D] stacked on the
layer axis by the scanned blocks, and ``connector.output`` [B, I, D]. A *site* is one layer of one of these plus
a pooling: vision layers are averaged over patches (and, where the tower has a CLS token, ``.cls`` takes it),
the connector over the image tokens it emits, and every LLM layer gives two sites, ``.image_mean`` and
``.last_token``. Sites and their widths are derived from ``jax.eval_shape`` of the model, never listed by hand.
Pooling runs inside the jitted forward, so only [B, D] vectors of the selected sites leave the device.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.errors import ConfigError
from jaxprobe.models.layers import layer_name
from jaxprobe.models.stack import STACKED_SUFFIX

MEAN_PATCHES, CLS_TOKEN, IMAGE_MEAN, LAST_TOKEN = "mean_patches", "cls", "image_mean", "last_token"
TOKEN_POOLINGS = {"llm": (IMAGE_MEAN, LAST_TOKEN)}


@dataclasses.dataclass(frozen=True)
class Site:
    name: str  # e.g. llm.layer_03.last_token
    source: str  # the sown name, e.g. llm.layers
    layer: int | None  # row of a stacked activation (None: the activation is not stacked)
    pooling: str
    dim: int

    @property
    def module(self) -> str:
        return self.name.split(".")[0]


def _layer_sites(module: str, source: str, depth: int, dim: int, vision_cls: bool) -> list[Site]:
    sites = []
    for i in range(depth):
        base = f"{module}.{layer_name(i, depth)}"
        if module in TOKEN_POOLINGS:
            sites += [Site(f"{base}.{pooling}", source, i, pooling, dim) for pooling in TOKEN_POOLINGS[module]]
            continue
        sites.append(Site(base, source, i, MEAN_PATCHES, dim))
        if vision_cls:
            sites.append(Site(f"{base}.{CLS_TOKEN}", source, i, CLS_TOKEN, dim))
    return sites


def sites_for(sown: Mapping[str, tuple[int, ...]], vision_cls: bool = False) -> list[Site]:
    """All sites a model offers, in model order, from the shapes it sows (``{name: shape}``)."""
    order = {"vision": 0, "connector": 1, "llm": 2}
    sites = []
    for name in sorted(sown, key=lambda n: order.get(n.split(".")[0], 3)):
        shape = tuple(sown[name])
        if name.endswith(STACKED_SUFFIX):
            module = name[: -len(STACKED_SUFFIX)]
            sites += _layer_sites(module, name, shape[0], shape[-1], vision_cls and module == "vision")
        else:
            sites.append(Site(name, name, None, MEAN_PATCHES, shape[-1]))
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


def pool(site: Site, activation: jax.Array, image_mask: jax.Array, last_index: jax.Array,
         vision_cls: bool = False) -> jax.Array:
    """[B, D] float32 vector of one site from its [B, N, D] activation; image_mask [B, T] marks image tokens,
    last_index [B] the last prompt token; with a CLS token at position 0, patch means leave it out."""
    activation = activation.astype(jnp.float32)
    if site.pooling == MEAN_PATCHES:
        return activation[:, 1:].mean(axis=1) if vision_cls and site.module == "vision" else activation.mean(axis=1)
    if site.pooling == CLS_TOKEN:
        return activation[:, 0]
    if site.pooling == IMAGE_MEAN:
        weights = image_mask.astype(jnp.float32)
        return jnp.einsum("btd,bt->bd", activation, weights) / jnp.maximum(weights.sum(1, keepdims=True), 1.0)
    if site.pooling == LAST_TOKEN:
        return jnp.take_along_axis(activation, last_index[:, None, None], axis=1)[:, 0]
    raise ValueError(f"unknown pooling {site.pooling!r}")


def site_groups(sites: Sequence[Site]) -> dict[str, list[Site]]:
    """Sites sharing a sown activation and a pooling, keyed ``source|pooling``, in selection order."""
    groups: dict[str, list[Site]] = {}
    for site in sites:
        groups.setdefault(f"{site.source}|{site.pooling}", []).append(site)
    return groups


def pool_groups(sites: Sequence[Site], sown: Mapping[str, jax.Array], image_mask: jax.Array, last_index: jax.Array,
                vision_cls: bool = False) -> dict[str, jax.Array]:
    """{``source|pooling``: [k, B, D]}: every selected layer of a stacked activation pooled in one vectorised op
    (call inside jit), so the traced graph grows with the number of activations, not with the model's depth."""
    pooled = {}
    for key, members in site_groups(sites).items():
        activation = sown[members[0].source]
        layers = [site.layer for site in members]
        stacked = activation[None] if layers == [None] else activation[np.asarray(layers)]
        pooled[key] = jax.vmap(lambda a, site=members[0]: pool(site, a, image_mask, last_index, vision_cls))(stacked)
    return pooled


def split_groups(sites: Sequence[Site], pooled: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{site name: [B, D]} from ``pool_groups``' stacked results."""
    return {site.name: np.asarray(pooled[key])[k] for key, members in site_groups(sites).items()
            for k, site in enumerate(members)}


def pool_sites(sites: Sequence[Site], sown: Mapping[str, jax.Array], image_mask: jax.Array, last_index: jax.Array,
               vision_cls: bool = False) -> dict[str, np.ndarray]:
    """Pool every selected site from the sown activations: {site name: [B, D]}."""
    return split_groups(sites, pool_groups(sites, sown, image_mask, last_index, vision_cls))
