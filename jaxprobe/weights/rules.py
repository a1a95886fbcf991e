"""Key maps as data: regex rules from checkpoint tensor names to param paths (with a stacked-layer row).

A family lists ``Rule``s; the first rule whose pattern matches a name decides. ``{group}`` in a target path is
filled from the pattern's named groups; the group ``layer`` gives the row of a stacked (scanned) leaf. Leaf
kinds say what a HF ``weight`` becomes: a linear layer's transposed ``kernel``, a norm's ``scale``, an
embedding table, or a conv patch kernel flattened to a matmul.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from jaxprobe.weights.keymap import ParamTarget, Transform, flatten_conv_kernel, identity, transpose_linear

LEAVES: dict[str, tuple[str, Transform]] = {  # kind -> (our leaf name for HF "weight", transform)
    "linear": ("kernel", transpose_linear),
    "norm": ("scale", identity),
    "embedding": ("embedding", identity),
    "conv": ("kernel", flatten_conv_kernel),
    "raw": ("", identity),  # the target path names the leaf itself
}


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str  # full-match regex over the tensor name, e.g. r"model\.layers\.(?P<layer>\d+)\.mlp\.(?P<m>\w+)"
    path: tuple[str, ...]  # module path of the target, e.g. ("decoder", "layers", "mlp", "{m}")
    kind: str = "linear"  # how a "weight" leaf maps (LEAVES); "bias" leaves always stay "bias"
    skip: bool = False  # a known tensor we deliberately do not load (e.g. a tied lm_head)


@dataclasses.dataclass(frozen=True)
class RuleKeyMap:
    """A ``KeyMap`` from ordered rules (tensor name prefixes are normalised by ``aliases`` first)."""

    rules: Sequence[Rule]
    aliases: Sequence[tuple[str, str]] = ()  # (prefix as stored, canonical prefix), first match wins

    def canonical(self, name: str) -> str:
        for stored, canonical in self.aliases:
            if name.startswith(stored):
                return canonical + name[len(stored):]
        return name

    def targets(self, name: str) -> list[ParamTarget] | None:
        name = self.canonical(name)
        for rule in self.rules:
            match = re.fullmatch(rule.pattern, name)
            if match is None:
                continue
            if rule.skip:
                return []
            groups = match.groupdict()
            path = tuple(part.format(**groups) for part in rule.path)
            layer = int(groups["layer"]) if groups.get("layer") is not None else None
            leaf = groups.get("leaf", "weight")
            if leaf == "bias":
                return [ParamTarget((*path, "bias"), identity, layer)]
            our_leaf, transform = LEAVES[rule.kind]
            return [ParamTarget((*path, our_leaf) if our_leaf else path, transform, layer)]
        return None
