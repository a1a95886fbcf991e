"""MedMNIST v2 / MedMNIST+ ``.npz`` files (``{flag}.npz`` at 28 px, ``{flag}_{size}.npz`` otherwise)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from jaxprobe.data.layouts import OFFICIAL_SPLITS
from jaxprobe.data.samples import Layout, Sample
from jaxprobe.errors import DatasetError

CLASSES_FILE = Path(__file__).with_name("medmnist_classes.json")
BASE_SIZE = 28  # the original MedMNIST resolution, whose files carry no size suffix


@functools.cache
def medmnist_table() -> dict:
    """The flag -> class names table and the published sizes."""
    return json.loads(CLASSES_FILE.read_text())


def npz_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == BASE_SIZE else f"{flag}_{size}.npz"


def medmnist_layout(manual_dir: Path, flag: str, size: int) -> Layout:
    """Samples of one flag and size; the npz is loaded once and images are sliced out lazily."""
    table = medmnist_table()
    if flag in table["multi_label"]:
        raise DatasetError(f"{flag} is multi-label; probing needs one class per image: pick a multi-class flag")
    path = manual_dir / npz_name(flag, size)
    if not path.is_file():
        found = sorted(p.name for p in manual_dir.glob("*.npz")) if manual_dir.is_dir() else []
        raise DatasetError(f"expected {path.name} in {manual_dir} (MedMNIST+ download), found npz files {found}")
    arrays = np.load(path)
    missing = [f"{split}_{kind}" for split in OFFICIAL_SPLITS for kind in ("images", "labels")]
    missing = [key for key in missing if key not in arrays.files]
    if missing:
        raise DatasetError(f"{path} lacks arrays {missing}; found {arrays.files}: is it a MedMNIST npz?")
    names = table["flags"][flag]
    splits = {}
    for split in OFFICIAL_SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1).astype(int)
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise DatasetError(f"{path}: {split} labels span {labels.min()}..{labels.max()}, {flag} has {len(names)}")
        splits[split] = [
            Sample(functools.partial(images.__getitem__, i), int(labels[i]), f"{split}/{i:06d}", f"{split}/{i:06d}")
            for i in range(len(labels))
        ]
    return Layout(list(names), splits, inputs=[path])
