"""Procedural, seeded, ultrasound-like lesion images: the offline dataset for the demo, tests and benchmarks.

Each image is B-mode-like speckle (multiplicative Rayleigh noise, smoothed, with depth attenuation). Images of a
lesion class carry one lesion whose look follows the BI-RADS cues that separate benign from malignant masses:
shape irregularity, margin sharpness, internal heterogeneity, and posterior enhancement vs. shadowing. The
``normal`` class has no lesion. Patients share their anatomy (background texture gain and depth profile), so a
split that puts one patient on both sides leaks information, as in the real datasets.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

GRADE_PREFIX = "grade"


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the synthetic dataset; two equal specs give identical images."""

    num_classes: int = 3
    num_images: int = 300
    image_size: int = 128
    difficulty: float = 0.3
    num_patients: int = 100
    seed: int = 0
    speckle_sigma: float = 1.2
    lesion_radius: tuple[float, float] = (0.12, 0.22)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must lie in [0, 1], got {self.difficulty}")
        if not self.num_classes <= self.num_patients <= self.num_images:
            raise ValueError(
                f"need num_classes <= num_patients <= num_images, got {self.num_classes}, "
                f"{self.num_patients}, {self.num_images}"
            )


def class_names(num_classes: int) -> list[str]:
    """BUSI-like names for 2 and 3 classes; ``normal`` plus malignancy grades beyond that."""
    if num_classes == 2:
        return ["benign", "malignant"]
    if num_classes == 3:
        return ["normal", "benign", "malignant"]
    return ["normal"] + [f"{GRADE_PREFIX}_{k}" for k in range(1, num_classes)]


def malignancy(label: int, num_classes: int) -> float | None:
    """Position of a class on the benign (0) -> malignant (1) axis; ``None`` for the lesion-free class."""
    lesion_classes = num_classes if num_classes == 2 else num_classes - 1
    first_lesion = 0 if num_classes == 2 else 1
    if label < first_lesion:
        return None
    return (label - first_lesion) / max(lesion_classes - 1, 1)


def patient_plan(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per image, its patient and label: patients get a class each (balanced), images spread over patients."""
    rng = np.random.default_rng([spec.seed, 0])
    patient_labels = np.arange(spec.num_patients) % spec.num_classes
    image_patients = np.concatenate(
        [np.arange(spec.num_patients), rng.integers(0, spec.num_patients, spec.num_images - spec.num_patients)]
    )
    image_patients = np.sort(image_patients)
    return image_patients, patient_labels[image_patients]


def _speckle(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smoothed Rayleigh speckle with unit mean: the grain of a B-mode image."""
    raw = rng.rayleigh(scale=1.0, size=(size, size))
    smooth = ndimage.gaussian_filter(raw, sigma=sigma * size / 128)
    return smooth / smooth.mean()


def _lesion_field(rng: np.random.Generator, size: int, m: float, difficulty: float, spec: SyntheticSpec):
    """Soft lesion mask in [0, 1] and its centre/radius; irregularity and blur grow with malignancy ``m``."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.35, 0.6), rng.uniform(0.3, 0.7)
    radius = rng.uniform(*spec.lesion_radius)
    aspect = rng.uniform(1.0, 1.6) if m < 0.5 else rng.uniform(0.8, 1.2)  # benign masses are wider than tall
    dy, dx = (yy - cy) * aspect, xx - cx
    theta, dist = np.arctan2(dy, dx), np.hypot(dy, dx)
    lobes = sum(rng.normal(0, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) / k for k in range(2, 9))
    irregularity = 0.05 + 0.25 * m + 0.1 * difficulty * rng.uniform(-1, 1)
    boundary = radius * (1 + irregularity * lobes / 3)
    softness = radius * (0.03 + 0.25 * m)
    return 1 / (1 + np.exp((dist - boundary) / softness)), (cy, cx, radius)


def render_image(spec: SyntheticSpec, index: int, patient: int, label: int) -> np.ndarray:
    """One uint8 [H, W, 3] grayscale-in-RGB image; deterministic in (spec, index, patient, label)."""
    size = spec.image_size
    patient_rng = np.random.default_rng([spec.seed, 1, patient])
    rng = np.random.default_rng([spec.seed, 2, index])
    depth = np.linspace(0, 1, size)[:, None]
    attenuation = np.exp(-patient_rng.uniform(0.3, 1.2) * depth)
    tissue = patient_rng.uniform(0.35, 0.55) * (1 + 0.3 * np.sin(2 * np.pi * (depth * patient_rng.uniform(1, 3))))
    image = tissue * attenuation * _speckle(rng, size, spec.speckle_sigma)
    m = malignancy(label, spec.num_classes)
    if m is not None:
        mask, (cy, cx, radius) = _lesion_field(rng, size, m, spec.difficulty, spec)
        contrast = (1 - 0.8 * spec.difficulty) * (0.75 + 0.15 * m)
        heterogeneity = _speckle(rng, size, spec.speckle_sigma * (3 - 2 * m)) ** (0.5 + 1.5 * m)
        image = image * (1 - contrast * mask) + contrast * mask * 0.15 * heterogeneity * image.mean()
        below = np.clip((np.arange(size)[:, None] / size - cy) / radius, 0, None) * np.exp(
            -(((np.arange(size)[None, :] / size - cx) / radius) ** 2)
        )
        posterior = (1 - 0.8 * spec.difficulty) * 0.4 * (0.5 - m)  # enhancement if benign, shadow if malignant
        image = image * (1 + posterior * np.clip(below, 0, 1))
    noise = rng.normal(0, 0.02 + 0.08 * spec.difficulty, (size, size))
    gray = np.clip((image / np.percentile(image, 99.5)) * 0.9 + noise, 0, 1)
    return np.repeat((gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
