"""What the scanned, plan-driven forward costs at the study's real widths, without allocating a weight.

- Compile time vs decoder depth (8 / 28 / 64 layers) of a Qwen2.5-VL-7B-wide model (vision 32 x 1280, LLM 3584
  wide, GQA 28/4, MLP 18944): with ``nn.scan`` the layers are one compiled body, so depth should barely matter
  (goal: 64 layers within 1.5x of 8).
- Matmul FLOPs of each ``RunPlan`` that capture derives from a site selection, counted on the jaxpr (scan bodies
  times their length; XLA's own cost analysis counts a loop body once): a vision-only selection should cost in
  proportion to the layers it runs, not the whole model.

Params are ``jax.ShapeDtypeStruct``s (``eval_shape``), so a 7B (or 64-layer) model compiles on a laptop.
Results: results/forward_scaling.json/.md. Usage: ``python -m benchmarks.forward_scaling``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.capture.forward import PooledForward, run_plan, sown_shapes
from jaxprobe.capture.sites import select_sites, sites_for
from jaxprobe.families.loading import abstract_params
from jaxprobe.families.qwen_vl import QwenVLFamily
from jaxprobe.models.config import ConnectorConfig, TextConfig, VisionConfig, VLMConfig

RESULTS = Path(__file__).parent / "results"
GRID = (1, 32, 32)  # a 448 x 448 image: 1024 patches, 256 image tokens
PROMPT = 300  # tokens: 256 image tokens + the question


def qwen25_7b(layers: int = 28) -> VLMConfig:
    vision = VisionConfig(tower="qwen_vit", depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420,
                          hidden_act="silu", patch_size=14, temporal_patch_size=2, norm="rmsnorm", mlp="gated",
                          window_size=112, fullatt_block_indexes=(7, 15, 23, 31), merge_size=2)
    text = TextConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=layers, num_heads=28,
                      num_kv_heads=4, head_dim=128, norm_eps=1e-6, rope_theta=1e6, rope_kind="mrope",
                      mrope_section=(16, 24, 24), qkv_bias=True)
    return VLMConfig(vision, ConnectorConfig("patch_merger", 1280, 3584, "rmsnorm", 1e-6, 2), text, 151655)


@dataclasses.dataclass
class Abstract:
    """Enough of a ``LoadedModel`` for PooledForward, with abstract params."""

    family: object
    config: VLMConfig
    params: dict
    dtype: object = jnp.bfloat16

    def module(self, plan=None):
        from jaxprobe.models.vlm import VisionLanguageModel

        return VisionLanguageModel(self.config, plan, self.dtype)

    @property
    def site_layout(self):
        return self.family.site_layout(self.config)


def abstract_inputs(config: VLMConfig, batch: int = 1):
    tokens = np.zeros((batch, PROMPT), np.int32)
    return QwenVLFamily().init_inputs(config).replace(
        input_ids=tokens, attention_mask=np.ones_like(tokens), positions=np.zeros((batch, 3, PROMPT), np.int32),
        pixels=np.zeros((batch, GRID[1] * GRID[2], config.vision.patch_dim), np.float32),
        image_mask=np.zeros_like(tokens, bool), last_index=np.full(batch, PROMPT - 1, np.int32), image_grid=GRID)


def model(config: VLMConfig) -> Abstract:
    family = QwenVLFamily()
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.bfloat16), abstract_params(family, config))
    return Abstract(family, config, params)


def forward_for(loaded: Abstract, patterns: list[str], answer: bool) -> PooledForward:
    sites = select_sites(sites_for(sown_shapes(loaded.family, loaded.config)), patterns)
    return PooledForward(loaded, sites, answer=answer, mesh=None)


def lowered(forward: PooledForward, loaded: Abstract):
    inputs = jax.tree.map(jnp.asarray, abstract_inputs(loaded.config))
    ids = jnp.arange(3) if forward.plan.logits else None
    return forward._forward.lower(loaded.params, inputs, ids, jax.random.key(0))


def matmul_flops(jaxpr) -> float:
    """2 x M x N x K of every dot_general, scan bodies counted ``length`` times, cond branches at their maximum."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in contract])
        elif eqn.primitive.name == "scan":
            total += eqn.params["length"] * matmul_flops(eqn.params["jaxpr"].jaxpr)
        elif eqn.primitive.name == "cond":
            total += max(matmul_flops(branch.jaxpr) for branch in eqn.params["branches"])
        else:
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", None)
                if inner is not None:
                    total += matmul_flops(getattr(inner, "jaxpr", inner))
    return total


def compile_times(depths: list[int]) -> dict[str, float]:
    times = {}
    for depth in depths:
        loaded = model(qwen25_7b(depth))
        start = time.perf_counter()
        lowered(forward_for(loaded, ["*"], answer=True), loaded).compile()
        times[str(depth)] = round(time.perf_counter() - start, 2)
        print(f"compile, {depth} decoder layers: {times[str(depth)]} s", flush=True)
    return times


PLANS = {  # name -> (site patterns, answer)
    "everything + answer": (["*"], True),
    "vision.layer_00 only": (["vision.layer_00"], False),
    "vision tower (all 32 blocks)": (["vision.*"], False),
    "connector": (["connector.output"], False),
    "llm.layer_13": (["llm.layer_13.last_token"], False),
}


def plan_flops() -> dict[str, dict]:
    loaded = model(qwen25_7b())
    full = None
    rows = {}
    for name, (patterns, answer) in PLANS.items():
        forward = forward_for(loaded, patterns, answer)
        flops = matmul_flops(jax.make_jaxpr(forward._pooled)(
            loaded.params, jax.tree.map(jnp.asarray, abstract_inputs(loaded.config)),
            jnp.arange(3) if answer else None, jax.random.key(0)).jaxpr)
        full = full or flops
        plan = run_plan(loaded.config, forward.sites, answer)
        rows[name] = {"gflops": round(flops / 1e9, 1), "of_full": round(flops / full, 4),
                      "vision_layers": plan.vision_layers, "llm_layers": plan.text_layers, "logits": plan.logits}
        print(name, rows[name], flush=True)
    return rows


def sharded_fraction(model_axis: int = 8) -> float:
    """Per-device share of the 7B-wide params with ``mesh.model=model_axis`` under the family's rules (from shapes
    alone: a mesh of abstract devices is not needed, only which dimensions divide)."""
    from jax.sharding import Mesh

    from jaxprobe.parallel import param_sharding

    config = qwen25_7b()
    family = QwenVLFamily()
    flat = jax.tree_util.tree_flatten_with_path(abstract_params(family, config))[0]
    mesh = Mesh(np.array(jax.devices()[:1] * model_axis).reshape(1, model_axis), ("data", "model"))
    total = per_device = 0.0
    for path, leaf in flat:
        names = tuple(getattr(key, "key", str(key)) for key in path)
        spec = param_sharding(mesh, family.sharding_rules(config), names, leaf.shape).spec
        split = np.prod([model_axis if axis == "model" else 1 for axis in spec])
        total += np.prod(leaf.shape)
        per_device += np.prod(leaf.shape) / split
    return float(per_device / total)


def markdown(result: dict) -> str:
    times = result["compile_seconds"]
    lines = ["| decoder layers | compile (s) |", "|---|---|"]
    lines += [f"| {depth} | {seconds} |" for depth, seconds in times.items()]
    lines.append(f"\n64 layers / 8 layers compile time: {result['compile_ratio_64_over_8']}x (goal <= 1.5x)\n")
    lines.append(f"Per-device share of the params with mesh.model=8: {result['mesh_model_8_param_share']:.4f} "
                 f"(1/8 = 0.125; goal <= 0.1375)\n")
    lines += ["| selection | GFLOPs / image | of the full forward | vision blocks run | LLM layers run | logits |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {row['gflops']} | {row['of_full']:.2%} | {row['vision_layers']} | {row['llm_layers']} | "
              f"{row['logits']} |" for name, row in result["plans"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 28, 64])
    args = parser.parse_args()
    times = compile_times(args.depths)
    result = {"model": "Qwen2.5-VL-7B widths, 448 px image, 300-token prompt, bf16, batch 1",
              "compile_seconds": times, "plans": plan_flops(),
              "compile_ratio_64_over_8": round(times.get("64", np.nan) / times.get("8", np.nan), 2),
              "mesh_model_8_param_share": round(sharded_fraction(8), 4),
              "devices": [str(d) for d in jax.devices()][:1]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "forward_scaling.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "forward_scaling.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
