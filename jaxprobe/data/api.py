"""Build, inspect and load jaxprobe's datasets by name.

Reading goes through ``tfds`` data sources over ``array_record`` files (random access, no TensorFlow). The index
of a dataset (id, label, split, group) is read with image decoding skipped, so counting and splitting never pay
for decoding pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import tensorflow_datasets as tfds

from jaxprobe.data import builders, sources, synthetic
from jaxprobe.errors import DatasetError
from jaxprobe.workdir import directory_lock

DATA_DIR_ENV = "JAXPROBE_DATA_DIR"
DEFAULT_DATA_DIR = "~/jaxprobe_datasets"
FILE_FORMAT = "array_record"

DATASETS: dict[str, type[builders.LayoutBuilder]] = {
    "synthetic_lesions": builders.SyntheticLesions,
    "busi": builders.Busi,
    "covid19_ct": builders.Covid19Ct,
    "chest_xray": builders.ChestXray,
    "medmnist": builders.Medmnist,
    "image_folder": builders.ImageFolder,
}


def default_data_dir() -> Path:
    """``$JAXPROBE_DATA_DIR`` if set, else ``~/jaxprobe_datasets``."""
    return Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)).expanduser()


def synthetic_config(**spec_fields: Any) -> builders.SyntheticConfig:
    """A synthetic_lesions config for any spec; its name is a hash of the fields so specs never collide."""
    spec = synthetic.SyntheticSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_fields.items()})
    digest = hashlib.sha1(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode()).hexdigest()[:10]
    return builders.SyntheticConfig(name=f"custom_{digest}", spec=spec)


def _builder_class(name: str) -> type[builders.LayoutBuilder]:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; jaxprobe knows {', '.join(DATASETS)}")
    return DATASETS[name]


def _resolve_config(cls: type[builders.LayoutBuilder], config: Any) -> Any:
    """Named configs pass through; a dict makes a synthetic spec; image_folder accepts any name."""
    if isinstance(config, dict):
        if cls is not builders.SyntheticLesions:
            raise DatasetError(f"only synthetic_lesions takes a spec dict as config, not {cls.name}")
        return synthetic_config(**config)
    if config is None:
        return None
    known = [c.name for c in cls.BUILDER_CONFIGS]
    if cls is builders.ImageFolder and config not in known:
        return tfds.core.BuilderConfig(name=str(config))
    if config not in known:
        shown = ", ".join(known) if known else "none (leave --config out)"
        raise DatasetError(f"{cls.name} has no config {config!r}; choose one of: {shown}")
    return config


def make_builder(name: str, data_dir: str | Path | None = None, config: Any = None) -> builders.LayoutBuilder:
    """Instantiate the builder of ``name`` writing to and reading from ``data_dir``."""
    cls = _builder_class(name)
    data_dir = Path(data_dir or default_data_dir()).expanduser()
    return cls(data_dir=os.fspath(data_dir), config=_resolve_config(cls, config), file_format=FILE_FORMAT)


def _check_manual_dir(builder: builders.LayoutBuilder, manual_dir: str | Path | None) -> Path | None:
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS is None:
        return None
    path = Path(manual_dir).expanduser() if manual_dir is not None else None
    if path is None or not path.is_dir() or not any(path.iterdir()):
        found = "no --manual-dir given" if path is None else f"{path} is missing or empty"
        raise DatasetError(f"{builder.name} is built from a manual download ({found}). "
                           f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS} Then pass --manual-dir DIR.")
    return path


def _remove_incomplete(builder: builders.LayoutBuilder) -> None:
    """Drop leftovers of an interrupted build; TFDS writes to ``incomplete.*`` and renames only when done."""
    parent = Path(builder.data_dir).parent
    for leftover in parent.glob(f"incomplete.*_{builder.version}"):
        shutil.rmtree(leftover, ignore_errors=True)


def _build_command(builder: builders.LayoutBuilder, manual: Path, config: Any) -> str:
    config_flag = f" --config {config}" if isinstance(config, str) else ""
    return (f"jaxprobe data build {builder.name}{config_flag} --manual-dir {manual} "
            f"--data-dir {builder.data_dir_root} --rebuild")


def check_source_unchanged(builder: builders.LayoutBuilder, manual: Path, config: Any) -> None:
    """Refuse a prepared dataset whose manual download changed since it was built (stale data is worse than none)."""
    recorded = tfds.builder_from_directory(builder.data_dir).info.metadata.get(sources.SOURCE_KEY)
    rebuild = _build_command(builder, manual, config)
    if recorded is None:
        raise DatasetError(f"{builder.name} in {builder.data_dir} was built without a record of its source files "
                           f"(by an older jaxprobe), so a changed download cannot be detected; rebuild it: {rebuild}")
    changes = sources.compare(recorded, sources.input_files(builder.read_layout(manual)), manual)
    if changes:
        raise DatasetError(f"{builder.name} in {builder.data_dir} was built from {recorded['root']}, but the source "
                           f"files in {manual} differ: {changes.describe()}. Rebuild it ({rebuild}; features "
                           "extracted from the old build then need a new work directory) or set a new data dir")


def build(name: str, manual_dir: str | Path | None = None, data_dir: str | Path | None = None,
          config: Any = None, rebuild: bool = False) -> DatasetSummary:
    """Prepare ``name`` and return its summary; rerun after an interruption.

    An already prepared dataset is reused only if its manual download is unchanged (``jaxprobe.data.sources``);
    ``rebuild`` replaces it instead. Builds into one data dir take turns (a lock on it), so two runs sharing
    ``$JAXPROBE_DATA_DIR`` never remove each other's half-written files.
    """
    manual = _check_manual_dir(make_builder(name, data_dir, config), manual_dir)
    with directory_lock(Path(data_dir or default_data_dir()).expanduser(), f"data build {name}", wait=True):
        builder = make_builder(name, data_dir, config)  # made under the lock: sees what a previous holder built
        if builder.is_prepared() and rebuild:
            shutil.rmtree(builder.data_dir)
            builder = make_builder(name, data_dir, config)
        elif builder.is_prepared() and manual is not None:
            check_source_unchanged(builder, manual, config)
        _remove_incomplete(builder)
        download_config = tfds.download.DownloadConfig(manual_dir=manual, try_download_gcs=False)
        builder.download_and_prepare(download_config=download_config, file_format=FILE_FORMAT)
    return summarize(builder)


def prepared_builder(name: str, data_dir: str | Path | None = None, config: Any = None) -> tfds.core.DatasetBuilder:
    """A builder over an already prepared dataset, or a ``DatasetError`` saying how to build it."""
    builder = make_builder(name, data_dir, config)
    if not builder.is_prepared():
        raise DatasetError(f"{name} is not built in {Path(builder.data_dir).parent.parent}; run "
                           f"`jaxprobe data build {name} [--manual-dir DIR] --data-dir {builder.data_dir_root}` first")
    return tfds.builder_from_directory(builder.data_dir)


def read_index(builder: tfds.core.DatasetBuilder) -> pd.DataFrame:
    """One row per sample (split, position in that split's data source, id, label, group), images not decoded."""
    rows = []
    for split in builder.info.splits:
        source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
        for i in range(len(source)):
            record = source[i]
            rows.append((split, i, record["id"].decode(), int(record["label"]), record["group"].decode()))
    return pd.DataFrame(rows, columns=["split", "position", "id", "label", "group"])


@dataclasses.dataclass(frozen=True)
class DatasetSummary:
    """What a user wants to see after a build: counts per split and class, patient groups, skipped inputs."""

    name: str
    class_names: list[str]
    counts: dict[str, dict[str, int]]
    groups: int
    skipped: list[dict[str, str]]
    source_digest: str | None = None  # names + contents of the manual download (None: generated, e.g. synthetic)

    def to_json(self) -> dict[str, Any]:
        return {**self.counts, "groups": self.groups, "skipped": self.skipped}

    def table(self) -> str:
        """A split x class count table with totals, for the terminal."""
        frame = pd.DataFrame(self.counts).T.reindex(columns=self.class_names).fillna(0).astype(int)
        frame["total"] = frame.sum(axis=1)
        lines = [f"{self.name}: {len(self.class_names)} classes, {self.groups} groups", frame.to_string()]
        lines.append(f"skipped inputs: {len(self.skipped)}")
        lines += [f"  {item['id']}: {item['reason']}" for item in self.skipped]
        return "\n".join(lines)


def summarize(builder: tfds.core.DatasetBuilder) -> DatasetSummary:
    index = read_index(builder)
    names = list(builder.info.features["label"].names)
    counts = {
        split: {names[k]: int((rows.label == k).sum()) for k in range(len(names))}
        for split, rows in index.groupby("split", sort=False)
    }
    skipped = list(builder.info.metadata.get("skipped", []))
    record = builder.info.metadata.get(sources.SOURCE_KEY)
    digest = sources.content_digest(record) if record is not None else None
    return DatasetSummary(builder.name, names, counts, int(index.group.nunique()), skipped, digest)


def info(name: str, data_dir: str | Path | None = None, config: Any = None) -> DatasetSummary:
    return summarize(prepared_builder(name, data_dir, config))


def load(name: str, split: str, data_dir: str | Path | None = None, config: Any = None):
    """Random-access source of decoded samples (``image`` uint8 [H, W, 3], ``label``, ``id``, ``group``)."""
    builder = prepared_builder(name, data_dir, config)
    if split not in builder.info.splits:
        raise DatasetError(f"{name} has no split {split!r}; it has {list(builder.info.splits)}")
    return builder.as_data_source(split)
