"""Tiny copies of the public downloads, laid out exactly like the real archives (PAPER.md), made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CORRUPT_BYTES = b"\x89PNG\r\n\x1a\n this is not a complete png"


def write_image(path: Path, seed: int, size: tuple[int, int] = (20, 24), mode: str = "L") -> Path:
    """A small random image; the format follows the suffix (case-insensitive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = size if mode == "L" else (*size, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    suffix = path.suffix.lower()
    kind = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}[suffix]
    Image.fromarray(pixels).save(path, format=kind)
    return path


BUSI_COUNTS = {"normal": 4, "benign": 6, "malignant": 5}


def make_busi(root: Path, corrupt: bool = True) -> Path:
    """``Dataset_BUSI_with_GT/<cls>/<cls> (i).png`` plus ``_mask.png`` / ``_mask_1.png`` beside each image."""
    top = root / "Dataset_BUSI_with_GT"
    seed = 0
    for name, count in BUSI_COUNTS.items():
        for i in range(1, count + 1):
            seed += 1
            write_image(top / name / f"{name} ({i}).png", seed, mode="RGB")
            write_image(top / name / f"{name} ({i})_mask.png", seed + 1000)
            if i == 2:
                write_image(top / name / f"{name} ({i})_mask_1.png", seed + 2000)
    if corrupt:
        (top / "benign" / "benign (99).png").write_bytes(CORRUPT_BYTES)
    return root


COVID_SPLIT_COUNTS = {"CT_COVID": {"train": 5, "val": 2, "test": 3}, "CT_NonCOVID": {"train": 6, "val": 2, "test": 3}}
COVID_LIST_DIR = {"CT_COVID": "COVID", "CT_NonCOVID": "NonCOVID"}


def make_covid_ct(root: Path, with_lists: bool = True) -> Path:
    """``Images-processed/CT_*`` (png and jpg names as in the repo) and ``Data-split/*/{split}CT_*.txt``."""
    seed = 100
    for name, per_split in COVID_SPLIT_COUNTS.items():
        for split, count in per_split.items():
            names = []
            for i in range(count):
                seed += 1
                file_name = f"2020.03.{seed}-p{i}-{seed}.png" if name == "CT_COVID" else f"{seed}%{i}.jpg"
                write_image(root / "Images-processed" / name / file_name, seed, mode="RGB")
                names.append(file_name)
            if with_lists:
                list_file = root / "Data-split" / COVID_LIST_DIR[name] / f"{split}{name}.txt"
                list_file.parent.mkdir(parents=True, exist_ok=True)
                list_file.write_text("\n".join(names) + "\n")
    return root


# (split, class) -> file names; patients have several images, as in Kermany's archive.
CHEST_FILES = {
    ("train", "NORMAL"): ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-0771-0001.jpeg", "IM-0117-0001.jpeg",
                          "IM-0119-0001.jpeg", "NORMAL2-IM-0772-0001.jpeg"],
    ("train", "PNEUMONIA"): ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_3.jpeg",
                             "person3_bacteria_10.jpeg", "person4_virus_7.jpeg", "person4_virus_8.jpeg",
                             "person5_bacteria_15.jpeg"],
    ("test", "NORMAL"): ["IM-0001-0001.jpeg", "IM-0003-0001.jpeg", "NORMAL2-IM-0007-0001.jpeg"],
    ("test", "PNEUMONIA"): ["person100_bacteria_475.jpeg", "person101_virus_187.jpeg", "person101_virus_188.jpeg"],
    ("val", "NORMAL"): ["NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1430-0001.jpeg"],
    ("val", "PNEUMONIA"): ["person1946_bacteria_4874.jpeg", "person1950_bacteria_4881.jpeg"],
}


def make_chest_xray(root: Path) -> Path:
    """``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg`` and the archive's ``__MACOSX`` junk."""
    seed = 500
    for (split, name), files in CHEST_FILES.items():
        for file_name in files:
            seed += 1
            write_image(root / "chest_xray" / split / name / file_name, seed)
    (root / "__MACOSX" / "chest_xray").mkdir(parents=True)
    (root / "__MACOSX" / "chest_xray" / "._IM-0115-0001.jpeg").write_bytes(b"junk")
    return root


MEDMNIST_SPLITS = {"train": 12, "val": 4, "test": 6}


def make_medmnist(root: Path, flag: str, size: int, num_classes: int, channels: int = 1) -> Path:
    """A MedMNIST+ npz: ``{split}_images`` [N, H, W(, 3)] uint8 and ``{split}_labels`` [N, 1]."""
    rng = np.random.default_rng(size)
    arrays = {}
    for split, count in MEDMNIST_SPLITS.items():
        shape = (count, size, size) if channels == 1 else (count, size, size, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % num_classes).reshape(-1, 1).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    path = root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path


def make_image_folder(root: Path, with_splits: bool) -> Path:
    """``root/<class>/*`` or ``root/<split>/<class>/*`` with every supported suffix, in mixed case."""
    suffixes = [".png", ".JPG", ".jpeg", ".Bmp", ".tif"]
    splits = ["train", "test"] if with_splits else [""]
    seed = 900
    for split in splits:
        for name, count in {"cyst": 3, "solid": 4}.items():
            for i in range(count):
                seed += 1
                write_image(root / split / name / f"img{i}{suffixes[i % len(suffixes)]}", seed, mode="RGB")
        (root / split / "cyst" / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / split / "cyst" / "notes.txt").write_text("not an image")
    return root
