"""synthetic_lesions: deterministic, patient-structured, and the class signal is really in the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from jaxprobe import data
from jaxprobe.data import synthetic


def _images(spec: synthetic.SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    patients, labels = synthetic.patient_plan(spec)
    images = np.stack([synthetic.render_image(spec, i, patients[i], labels[i]) for i in range(spec.num_images)])
    return images, labels


def test_same_spec_same_pixels_other_seed_other_pixels():
    spec = synthetic.SyntheticSpec(num_images=6, num_patients=3, image_size=32)
    a, _ = _images(spec)
    b, _ = _images(spec)
    c, _ = _images(synthetic.SyntheticSpec(num_images=6, num_patients=3, image_size=32, seed=1))
    assert a.dtype == np.uint8 and a.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_every_patient_has_one_class_and_classes_are_covered():
    spec = synthetic.SyntheticSpec(num_classes=4, num_images=50, num_patients=12)
    patients, labels = synthetic.patient_plan(spec)
    for patient in np.unique(patients):
        assert len(set(labels[patients == patient])) == 1
    assert set(labels) == {0, 1, 2, 3} and len(np.unique(patients)) == 12
    assert synthetic.class_names(4) == ["normal", "grade_1", "grade_2", "grade_3"]


def _pixel_probe_accuracy(difficulty: float) -> float:
    spec = synthetic.SyntheticSpec(num_images=150, num_patients=60, image_size=32, difficulty=difficulty)
    images, labels = _images(spec)
    features = images[..., 0].reshape(len(images), -1).astype(np.float32) / 255
    return cross_val_score(LogisticRegression(max_iter=500, C=0.1), features, labels, cv=3).mean()


def test_class_signal_is_in_the_pixels_and_fades_with_difficulty():
    easy, hard = _pixel_probe_accuracy(0.0), _pixel_probe_accuracy(1.0)
    assert easy > 0.55  # chance is 1/3 for three balanced classes
    assert hard < easy - 0.15


def test_invalid_spec_is_refused():
    with pytest.raises(ValueError, match="difficulty"):
        synthetic.SyntheticSpec(difficulty=2.0)
    with pytest.raises(ValueError, match="num_patients"):
        synthetic.SyntheticSpec(num_images=5, num_patients=10)


def test_custom_spec_builds_under_its_own_config(tmp_path):
    spec = {"num_classes": 2, "num_images": 10, "num_patients": 4, "image_size": 24}
    summary = data.build("synthetic_lesions", data_dir=tmp_path, config=spec)
    assert sum(summary.counts["full"].values()) == 10 and summary.class_names == ["benign", "malignant"]
    assert summary.groups == 4
    again = data.build("synthetic_lesions", data_dir=tmp_path, config=dict(spec))
    assert again == summary
