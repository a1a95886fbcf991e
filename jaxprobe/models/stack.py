"""Identical blocks stacked with ``nn.scan``: one compiled body whatever the depth.

Params of the blocks are stacked on a leading layer axis, and so are the intermediates a block sows (a block
sows ``<module>.layers`` [L, ...]; capture turns row i into the site ``<module>.layer_i``). A stack can run only
its first ``run`` blocks (the params are sliced inside the module, so callers always pass the full tree), which is
how a forward skips every layer after the last one it needs. LoRA adapters (the ``lora`` collection) are stacked
and sliced like the params, and LoRA dropout draws a different mask in every layer.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxprobe.models.layers import LORA, LORA_DROPOUT

STACKED_SUFFIX = ".layers"  # sown names with a leading layer axis


def stacked(block: type[nn.Module], depth: int, run: int, remat: bool, broadcast_args: int,
            per_layer_args: int = 0) -> type[nn.Module]:
    """A scanned version of ``block`` over ``run`` of its ``depth`` layers.

    The block is called as ``block(carry, *broadcast, *per_layer) -> (carry, None)``: ``broadcast_args`` inputs are
    the same for every layer (positions, masks), ``per_layer_args`` have a leading [depth] axis (flags).
    """
    body = nn.remat(block, prevent_cse=False) if remat else block
    scanned = nn.scan(body, variable_axes={"params": 0, LORA: 0, "intermediates": 0, "cache": 0},
                      split_rngs={"params": True, LORA_DROPOUT: True},
                      in_axes=(nn.broadcast,) * broadcast_args + (0,) * per_layer_args, length=run)
    if run == depth:
        return scanned
    return nn.map_variables(scanned, ("params", LORA), trans_in_fn=lambda tree: jax.tree.map(lambda a: a[:run], tree),
                            init=False)
