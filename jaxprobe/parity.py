"""``jaxprobe parity SRC``: our Flax model against transformers' PyTorch model on the same processed inputs.

Every site (vision blocks, connector, decoder layers) and the logits are compared by max abs difference, and
the next-token distributions by KL divergence. Needs torch (the reference), imported only here and lazily.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.errors import CheckpointError
from jaxprobe.models.registry import LoadedModel, load_model
from jaxprobe.models.rope_index import rope_index

PARITY_CLASSES = ["benign", "malignant"]
PARITY_IMAGE_SIZE = 64


@dataclasses.dataclass(frozen=True)
class ParityReport:
    max_abs: dict[str, float]  # site -> max abs difference
    next_token_kl: float
    atol: float

    @property
    def passed(self) -> bool:
        return max(self.max_abs.values()) <= self.atol

    def table(self) -> str:
        lines = [f"{site:32s} {value:.2e}" for site, value in self.max_abs.items()]
        lines.append(f"{'next-token KL':32s} {self.next_token_kl:.2e}")
        lines.append(f"{'PASS' if self.passed else 'FAIL'} at atol {self.atol:g}")
        return "\n".join(lines)


def jax_forward(loaded: LoadedModel, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits and every sown activation for processor outputs (``pixel_values`` packed as transformers has them)."""
    grid = tuple(int(g) for g in batch["image_grid_thw"][0])
    images = len(batch["image_grid_thw"])
    pixels = batch["pixel_values"].reshape(images, -1, batch["pixel_values"].shape[-1])
    positions = rope_index(batch["input_ids"], batch["attention_mask"], batch["image_grid_thw"],
                           loaded.config.image_token_id, loaded.config.vision.merge_size)
    model = loaded.module(grid)

    def forward(params):
        return model.apply({"params": params}, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
                           jnp.asarray(positions), jnp.asarray(pixels, jnp.float32), mutable=["intermediates"])

    logits, state = jax.jit(forward)(loaded.params)
    sown = {}
    for part in state["intermediates"].values():
        sown.update({name: np.asarray(value[0]) for name, value in part.items()})
    return np.asarray(logits), sown


def torch_forward(model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' vision block outputs, merger output, decoder layer outputs and logits (forward hooks)."""
    import torch

    captured = {}
    hooks = [block.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(f"vision{i}", out))
             for i, block in enumerate(model.model.visual.blocks)]
    hooks += [layer.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(f"llm{i}", out))
              for i, layer in enumerate(model.model.language_model.layers)]
    tensors = {key: torch.from_numpy(np.asarray(value)) for key, value in batch.items()}
    with torch.no_grad():
        logits = model(**tensors).logits
        merged = model.model.get_image_features(tensors["pixel_values"], tensors["image_grid_thw"]).pooler_output
    for hook in hooks:
        hook.remove()
    out = {key: (value[0] if isinstance(value, tuple) else value).float().numpy() for key, value in captured.items()}
    out["merged"] = torch.cat(list(merged)).float().numpy()
    out["logits"] = logits.float().numpy()
    return out


def compare(ours: tuple[np.ndarray, dict[str, np.ndarray]], reference: dict[str, np.ndarray],
            attention_mask: np.ndarray) -> tuple[dict[str, float], float]:
    """Per-site max abs differences (valid tokens only) and the KL of the last valid token's distribution."""
    logits, sown = ours
    valid = attention_mask.astype(bool)
    diffs = {}
    for i, site in enumerate(sorted(k for k in sown if k.startswith("vision."))):
        diffs[site] = float(np.abs(sown[site].reshape(reference[f"vision{i}"].shape) - reference[f"vision{i}"]).max())
    merged = sown["connector.output"].reshape(reference["merged"].shape)
    diffs["connector.output"] = float(np.abs(merged - reference["merged"]).max())
    for i, site in enumerate(sorted(k for k in sown if k.startswith("llm."))):
        diffs[site] = float(np.abs(sown[site][valid] - reference[f"llm{i}"][valid]).max())
    diffs["logits"] = float(np.abs(logits[valid] - reference["logits"][valid]).max())
    last = valid.sum(1) - 1
    rows = np.arange(len(last))
    log_p = jax.nn.log_softmax(jnp.asarray(reference["logits"][rows, last], jnp.float32))
    log_q = jax.nn.log_softmax(jnp.asarray(logits[rows, last], jnp.float32))
    kl = float(jnp.max(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)))
    return diffs, kl


def parity_inputs(checkpoint_dir: Path) -> dict[str, np.ndarray]:
    """A synthetic lesion image and the classification prompt, through the checkpoint's own processor."""
    from jaxprobe.capture.prompts import build_prompt, encode, load_processor
    from jaxprobe.data.synthetic import SyntheticSpec, render_image

    processor = load_processor(checkpoint_dir)
    image = render_image(SyntheticSpec(image_size=PARITY_IMAGE_SIZE), 0, 0, 2)
    batch = encode(processor, build_prompt(processor, PARITY_CLASSES), [image])
    return {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                                        "mm_token_type_ids")}


def run_parity(checkpoint_dir: str | Path, atol: float = 1e-4) -> ParityReport:
    """Compare our model with transformers' on ``checkpoint_dir`` (float32 on both sides)."""
    try:
        import torch  # noqa: F401
        from transformers import AutoModelForImageTextToText
    except ImportError as error:
        raise CheckpointError("parity needs the PyTorch reference: pip install torch==2.13.0") from error
    checkpoint_dir = Path(checkpoint_dir)
    batch = parity_inputs(checkpoint_dir)
    reference_model = AutoModelForImageTextToText.from_pretrained(checkpoint_dir, dtype="float32").eval()
    diffs, kl = compare(jax_forward(load_model(checkpoint_dir), batch), torch_forward(reference_model, batch),
                        batch["attention_mask"])
    return ParityReport(diffs, kl, atol)
