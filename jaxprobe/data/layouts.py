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
    skipped = []
    for name, samples in zip(COVID_CLASSES, by_class, strict=True):
        by_file = {Path(s.id).name: s for s in samples}
        for split in OFFICIAL_SPLITS:
            list_file = root / "Data-split" / COVID_LIST_DIRS[name] / f"{split}{name}.txt"
            if not list_file.is_file():
                raise DatasetError(f"official split list {list_file} is missing; {_listing(list_file.parent)}")
            for file_name in _read_split_list(list_file):
                sample = by_file.pop(file_name, None)
                if sample is None:
                    skipped.append({"id": f"{list_file.name}:{file_name}", "reason": "listed but no such image"})
                else:
                    splits.setdefault(split, []).append(sample)
        if by_file:
            splits.setdefault("unlisted", []).extend(by_file.values())
    return Layout(COVID_CLASSES, splits, skipped)


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


def image_folder_layout(manual_dir: Path) -> Layout:
    """``root/<class>/*`` (one split) or ``root/<split>/<class>/*``; class names sorted alphabetically."""
    expected = "<root>/<class>/<image> or <root>/<split>/<class>/<image>"
    top = _subdirs(manual_dir) if manual_dir.is_dir() else []
    if not top:
        raise DatasetError(f"expected {expected}; {_listing(manual_dir)}")
    if any(_images_in(folder) for folder in top):
        names = [folder.name for folder in top]
        samples = [s for k, folder in enumerate(top) for s in _class_samples(manual_dir, folder, k)]
        return Layout(names, {FULL_SPLIT: samples})
    names = sorted({sub.name for folder in top for sub in _subdirs(folder)})
    if not names:
        raise DatasetError(f"expected {expected}, but no folder under {manual_dir} holds images")
    splits = {}
    for folder in top:
        if not re.fullmatch(r"\w+", folder.name) or folder.name == "all":
            raise DatasetError(f"split folder {folder} needs a name of letters, digits or _, other than 'all'")
        splits[folder.name] = [
            s for sub in _subdirs(folder) for s in _class_samples(manual_dir, sub, names.index(sub.name))
        ]
    return Layout(names, splits)
