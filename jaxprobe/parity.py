"""``jaxprobe parity SRC``: our Flax model against the family's PyTorch reference on the same processed inputs.

Every site (vision blocks, connector, decoder layers) and the logits are compared by max abs difference, and the
next-token distributions by KL divergence. The inputs come from the checkpoint's own processor and our side runs
capture's forward (``apply_sown``), so parity checks exactly what extraction runs. Needs torch, imported lazily.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.capture.forward import apply_sown
from jaxprobe.errors import CheckpointError
from jaxprobe.families.base import ModelInputs
from jaxprobe.families.loading import LoadedModel, load_model
from jaxprobe.models.layers import layer_name
from jaxprobe.models.stack import STACKED_SUFFIX

PARITY_CLASSES = ["benign", "malignant"]
PARITY_QUESTION = "Which of the following best describes this medical image?\n{options}\nAnswer with the letter."
PARITY_IMAGE_SIZE = 64


PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json")


@dataclasses.dataclass(frozen=True)
class ParityReport:
    max_abs: dict[str, float]  # site -> max abs difference
    next_token_kl: float
    atol: float
    inputs: str = "the checkpoint's processor"

    @property
    def passed(self) -> bool:
        return max(self.max_abs.values()) <= self.atol

    def table(self) -> str:
        lines = [f"{site:32s} {value:.2e}" for site, value in self.max_abs.items()]
        lines.append(f"{'next-token KL':32s} {self.next_token_kl:.2e}")
        lines.append(f"{'inputs':32s} {self.inputs}")
        lines.append(f"{'PASS' if self.passed else 'FAIL'} at atol {self.atol:g}")
        return "\n".join(lines)


def unstack(sown: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stacked ``<module>.layers`` [L, ...] -> one ``<module>.layer_NN`` entry per layer."""
    out = {}
    for name, value in sown.items():
        if name.endswith(STACKED_SUFFIX):
            module = name[: -len(STACKED_SUFFIX)]
            out.update({f"{module}.{layer_name(i, len(value))}": value[i] for i in range(len(value))})
        else:
            out[name] = value
    return out


def jax_activations(loaded: LoadedModel, inputs: ModelInputs) -> dict[str, np.ndarray]:
    """Every sown activation (one entry per layer) and the logits at every position."""
    logits, sown = jax.jit(lambda p, x: apply_sown(loaded.module(), p, x, all_logits=True))(
        loaded.params, jax.tree.map(jnp.asarray, inputs))
    return {**unstack({k: np.asarray(v) for k, v in sown.items()}), "logits": np.asarray(logits)}


def compare(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray],
            attention_mask: np.ndarray) -> tuple[dict[str, float], float]:
    """Per-site max abs differences (LLM sites and logits on real tokens only) and the KL of the last real
    token's next-token distribution."""
    valid = np.asarray(attention_mask).astype(bool)
    missing = sorted(set(reference) - set(ours))
    if missing:
        raise CheckpointError(f"our model produced no {missing}: the family's site layout and reference disagree")
    diffs = {}
    for site, expected in reference.items():
        mine = ours[site].reshape(expected.shape)
        if site.startswith("llm.") or site == "logits":
            mine, expected = mine[valid], expected[valid]
        diffs[site] = float(np.abs(mine - expected).max())
    last = valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    rows = np.arange(len(last))
    log_p = jax.nn.log_softmax(jnp.asarray(reference["logits"][rows, last], jnp.float32))
    log_q = jax.nn.log_softmax(jnp.asarray(ours["logits"][rows, last], jnp.float32))
    return diffs, float(jnp.max(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)))


def parity_inputs(loaded: LoadedModel) -> tuple[ModelInputs, str]:
    """A synthetic lesion image and the classification prompt through the checkpoint's own processor; for a
    checkpoint with no tokenizer or processor files at all, the family's synthetic inputs (said in the report)."""
    from jaxprobe.data.synthetic import SyntheticSpec, render_image

    if not any((loaded.checkpoint / name).is_file() for name in PROCESSOR_FILES):
        return loaded.family.synthetic_inputs(loaded.config), "synthetic ids and pixels (no processor files)"
    processor = loaded.family.processor(loaded.checkpoint)
    image = render_image(SyntheticSpec(image_size=PARITY_IMAGE_SIZE), 0, 0, 2)
    return processor.encode(processor.prompt(PARITY_CLASSES, PARITY_QUESTION), [image]), "the checkpoint's processor"


def run_parity(checkpoint_dir: str | Path, atol: float = 1e-4, inputs: ModelInputs | None = None) -> ParityReport:
    """Compare our model with the reference on ``checkpoint_dir`` (float32 on both sides)."""
    checkpoint_dir = Path(checkpoint_dir).expanduser()
    if not checkpoint_dir.is_dir():
        raise CheckpointError(f"{checkpoint_dir} is not a checkpoint directory (parity needs a local directory "
                              "with config.json and safetensors; `jaxprobe convert` fetches hub ids)")
    loaded = load_model(checkpoint_dir, "float32", cache_dir=False)
    inputs, source = (inputs, "given") if inputs is not None else parity_inputs(loaded)
    reference = loaded.family.reference()
    expected = reference.run(reference.load(checkpoint_dir), inputs)
    diffs, kl = compare(jax_activations(loaded, inputs), expected, np.asarray(inputs.attention_mask))
    return ParityReport(diffs, kl, atol, source)
