"""Read the public downloads' folder layouts (PAPER.md) into ``Layout``s, without decoding any image.

Every reader accepts the manual dir itself or the folder the download unpacks into, and fails with a
``DatasetError`` that shows the expected layout next to what it found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from jaxprobe.data.samples import IMAGE_SUFFIXES, Layout, Sample, is_image_file
from jaxprobe.errors import DatasetError

FULL_SPLIT = "full"  # the one split of a download without official splits ("all" is reserved by TFDS)
IGNORED_DIRS = ("__MACOSX",)
BUSI_CLASSES = ["normal", "benign", "malignant"]
BUSI_MASK = re.compile(r"_mask(_\d+)?$")
COVID_CLASSES = ["CT_COVID", "CT_NonCOVID"]
COVID_LIST_DIRS = {"CT_COVID": "COVID", "CT_NonCOVID": "NonCOVID"}
OFFICIAL_SPLITS = ("train", "val", "test")
CHEST_CLASSES = ["NORMAL", "PNEUMONIA"]
CHEST_PATIENT = re.compile(r"^(?P<patient>person\d+)_|^(?P<study>(?:NORMAL2-)?IM-\d+)-\d+")


def _listing(path: Path) -> str:
    if not path.exists():
        return f"{path} does not exist"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "")
    return f"{path} holds [{shown}]"


def find_root(manual_dir: Path, candidates: Iterable[str], required: Iterable[str], expected: str) -> Path:
    """First of ``manual_dir/<candidate>`` that contains every ``required`` entry, else a layout error."""
    required = list(required)
    for candidate in candidates:
        root = manual_dir / candidate
        if all((root / entry).exists() for entry in required):
            return root
    raise DatasetError(
        f"expected the download laid out as {expected} in the manual dir; {_listing(manual_dir)}. "
        "Unpack the public archive there unchanged, or point --manual-dir at the folder that holds it."
    )


def _images_in(folder: Path, keep=lambda path: True) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p) and keep(p))


def _class_samples(root: Path, folder: Path, label: int, group_of=None, keep=lambda path: True) -> list[Sample]:
    """Samples of one class folder, with ids relative to ``root``; an empty class is an error."""
    images = _images_in(folder, keep) if folder.is_dir() else []
    if not images:
        raise DatasetError(
            f"class folder {folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "every class needs at least one image: restore the missing files or drop the class folder."
        )
    samples = []
    for path in images:
        sample_id = path.relative_to(root).as_posix()
        samples.append(Sample(path, label, sample_id, group_of(path) if group_of else sample_id))
    return samples


def busi_layout(manual_dir: Path) -> Layout:
    """``Dataset_BUSI_with_GT/{normal,benign,malignant}/<cls> (N).png``; ``*_mask*.png`` files are not samples."""
    root = find_root(manual_dir, ["Dataset_BUSI_with_GT", "."], BUSI_CLASSES, "Dataset_BUSI_with_GT/<class>/*.png")
    samples = []
    for label, name in enumerate(BUSI_CLASSES):
        samples += _class_samples(root, root / name, label, keep=lambda p: not BUSI_MASK.search(p.stem))
    return Layout(BUSI_CLASSES, {FULL_SPLIT: samples})


def _read_split_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def covid_ct_layout(manual_dir: Path) -> Layout:
    """``Images-processed/CT_{COVID,NonCOVID}/*`` with the official ``Data-split`` lists when present."""
    root = find_root(
        manual_dir,
        [".", "COVID-CT", "COVID-CT-master"],
        [f"Images-processed/{name}" for name in COVID_CLASSES],
        "Images-processed/CT_COVID/* and Images-processed/CT_NonCOVID/* (optionally Data-split/)",
    )
    by_class = [_class_samples(root, root / "Images-processed" / name, k) for k, name in enumerate(COVID_CLASSES)]
    if not (root / "Data-split").is_dir():
        return Layout(COVID_CLASSES, {FULL_SPLIT: [s for samples in by_class for s in samples]})
    splits: dict[str, list[Sample]] = {}
    skipped, list_files = [], []
    for name, samples in zip(COVID_CLASSES, by_class, strict=True):
        by_file = {Path(s.id).name: s for s in samples}
        for split in OFFICIAL_SPLITS:
            list_file = root / "Data-split" / COVID_LIST_DIRS[name] / f"{split}{name}.txt"
            if not list_file.is_file():
                raise DatasetError(f"official split list {list_file} is missing; {_listing(list_file.parent)}")
            list_files.append(list_file)
            for file_name in _read_split_list(list_file):
                sample = by_file.pop(file_name, None)
                if sample is None:
                    skipped.append({"id": f"{list_file.name}:{file_name}", "reason": "listed but no such image"})
                else:
                    splits.setdefault(split, []).append(sample)
        if by_file:
            splits.setdefault("unlisted", []).extend(by_file.values())
    return Layout(COVID_CLASSES, splits, skipped, list_files)


def chest_xray_patient(path: Path) -> str:
    """Patient id from Kermany file names (``person1_bacteria_1``, ``IM-0115-0001``); else the file stem."""
    match = CHEST_PATIENT.match(path.stem)
    if match is None:
        return path.stem
    return match.group("patient") or match.group("study")


def chest_xray_layout(manual_dir: Path) -> Layout:
    """``chest_xray/{train,test[,val]}/{NORMAL,PNEUMONIA}/*.jpeg``, patient ids parsed from file names."""
    root = find_root(
        manual_dir,
        [".", "chest_xray", "chest_xray/chest_xray"],
        [f"{split}/{name}" for split in ("train", "test") for name in CHEST_CLASSES],
        "chest_xray/{train,test[,val]}/{NORMAL,PNEUMONIA}/*.jpeg",
    )
    splits = {}
    for split in OFFICIAL_SPLITS:
        if (root / split).is_dir():
            splits[split] = [
                sample
                for label, name in enumerate(CHEST_CLASSES)
                for sample in _class_samples(root, root / split / name, label, group_of=chest_xray_patient)
            ]
    return Layout(CHEST_CLASSES, splits)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in IGNORED_DIRS)


# Folder names that make the first level of an image_folder tree a split (any case) -> the split they become.
IMAGE_FOLDER_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
IMAGE_FOLDER_LAYOUT = ("<root>/<class>/<image>, <root>/<class>/<patient>/<image>, or either under "
                       "<root>/<split>/ with <split> one of " + ", ".join(IMAGE_FOLDER_SPLITS))


def _patient_images(folder: Path) -> list[Path]:
    """Every image under a patient folder, at any depth."""
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def _class_folder_samples(root: Path, folder: Path, label: int) -> list[Sample]:
    """``<class>/<image>`` (each image its own group) or ``<class>/<patient>/<image>`` (the patient is the group)."""
    patients = [sub for sub in _subdirs(folder) if _patient_images(sub)]
    if not patients:
        return _class_samples(root, folder, label)
    loose = _images_in(folder)
    if loose:
        raise DatasetError(f"class folder {folder} holds {len(loose)} images and {len(patients)} sub-folders with "
                           "images; detected layout <root>/<class>/<patient>/<image>, which needs every image in a "
                           f"patient folder: move {loose[0].name} and the other loose images into one")
    return [Sample(path, label, path.relative_to(root).as_posix(), patient.name)
            for patient in patients for path in _patient_images(patient)]


def _image_folder_splits(manual_dir: Path, top: list[Path]) -> dict[str, list[Path]]:
    """split name -> class folders; ``{"full": top}`` when the first level holds classes."""
    named = [folder for folder in top if folder.name.lower() in IMAGE_FOLDER_SPLITS]
    if not named:
        return {FULL_SPLIT: top}
    others = [folder.name for folder in top if folder not in named]
    if others:
        raise DatasetError(f"{manual_dir} mixes split folders {[f.name for f in named]} with other folders {others}: "
                           "it is neither <root>/<class>/... nor <root>/<split>/<class>/...; expected "
                           f"{IMAGE_FOLDER_LAYOUT}. Move the other folders into a split, or the splits' classes up")
    splits: dict[str, list[Path]] = {}
    for folder in named:
        split = IMAGE_FOLDER_SPLITS[folder.name.lower()]
        if split in splits:
            raise DatasetError(f"{manual_dir} has two folders for the {split!r} split ({folder.name} and another); "
                               "keep one")
        if _images_in(folder):
            raise DatasetError(f"split folder {folder} holds images directly; detected layout <root>/<split>/<class>/"
                               "<image>, so its images belong in class folders")
        splits[split] = _subdirs(folder)
    return splits


def image_folder_layout(manual_dir: Path) -> Layout:
    """Class folders, optionally under split folders (only ``train``, ``val``, ``validation``, ``test`` are
    splits) and optionally holding one folder per patient (the sample's ``group``); classes sorted by name."""
    top = _subdirs(manual_dir) if manual_dir.is_dir() else []
    if not top:
        raise DatasetError(f"expected {IMAGE_FOLDER_LAYOUT}; {_listing(manual_dir)}")
    class_folders = _image_folder_splits(manual_dir, top)
    names = sorted({folder.name for folders in class_folders.values() for folder in folders})
    if not names:
        raise DatasetError(f"expected {IMAGE_FOLDER_LAYOUT}, but the split folders under {manual_dir} hold no "
                           "class folders")
    splits = {split: [sample for folder in folders
                      for sample in _class_folder_samples(manual_dir, folder, names.index(folder.name))]
              for split, folders in class_folders.items()}
    return Layout(names, splits)
