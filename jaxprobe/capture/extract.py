"""``jaxprobe extract CONFIG``: dataset + checkpoint -> ``<workdir>/features`` (resumable) + manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
from PIL import Image

from jaxprobe import data
from jaxprobe.capture.forward import PooledForward, sown_names
from jaxprobe.capture.loop import extract_into
from jaxprobe.capture.prompts import build_prompt, encode, load_processor
from jaxprobe.capture.sites import select_sites, sites_for
from jaxprobe.errors import ConfigError
from jaxprobe.features import FeatureStoreWriter
from jaxprobe.manifest import record_stage, settings_hash
from jaxprobe.models.config import SUPPORTED_MODEL_TYPES
from jaxprobe.models.registry import LoadedModel, load_model
from jaxprobe.parallel import data_mesh
from jaxprobe.pipeline import PreparedData, data_dir_of, prepare_data
from jaxprobe.weights.hub import resolve_source
from jaxprobe.weights.tiny import write_tiny_checkpoint
from jaxprobe.workdir import FEATURES_DIR

TINY_PREFIX = "tiny:"
DISK_MARGIN = 1.2  # ask for 20% more free space than the feature arrays need


def resolve_checkpoint(model: ml_collections.ConfigDict, workdir: Path) -> tuple[Path, str | None]:
    """A local checkpoint directory for ``model.checkpoint`` (``tiny:<family>`` is written into the workdir)."""
    if model.checkpoint.startswith(TINY_PREFIX):
        family = model.checkpoint[len(TINY_PREFIX):]
        target = workdir / "checkpoint" / family
        if not (target / "config.json").is_file():
            write_tiny_checkpoint(family, target, seed=0)
        return target, None
    local, revision = resolve_source(model.checkpoint, model.revision)
    return Path(local), revision


def site_dims(loaded: LoadedModel, sites) -> dict[str, int]:
    widths = {"vision": loaded.config.vision.hidden_size, "connector": loaded.config.vision.out_hidden_size,
              "llm": loaded.config.text.hidden_size}
    return {site.name: widths[site.name.split(".")[0]] for site in sites}


def check_workdir(workdir: Path, rows: int, dims: dict[str, int], itemsize: int) -> None:
    """Fail before any work on an unwritable work directory or too little disk space."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"work directory {workdir} is not writable ({error}); choose another with --set "
                          "workdir=DIR") from error
    needed = int(rows * sum(dims.values()) * itemsize * DISK_MARGIN)
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise ConfigError(f"features need about {needed / 2**30:.2f} GiB in {workdir} but only "
                          f"{free / 2**30:.2f} GiB is free; free space or select fewer sites (capture.sites)")


def fingerprint(config: ml_collections.ConfigDict, checkpoint: Path) -> str:
    """What the features depend on: data, split, model, capture settings and the checkpoint's config."""
    relevant = {key: config[key].to_dict() for key in ("data", "split", "model", "capture")}
    relevant["checkpoint_config"] = (checkpoint / "config.json").read_text()
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def store_index(prepared: PreparedData) -> pd.DataFrame:
    """The feature index: one row per sample in the assigned train/val/test split (unassigned rows dropped)."""
    frames = [prepared.index.iloc[rows].assign(split_source=prepared.index.split.iloc[rows].to_numpy(), split=name)
              for name, rows in prepared.assignment.items()]
    index = pd.concat(frames, ignore_index=True)
    index.insert(0, "row", np.arange(len(index)))
    return index


def image_loader(config: ml_collections.ConfigDict):
    """Decoded, resized RGB image of an index row (sources opened once per split)."""
    builder = data.prepared_builder(config.data.name, data_dir_of(config), config.data.config)
    sources = {split: builder.as_data_source(split) for split in builder.info.splits}
    size = (config.capture.image_size, config.capture.image_size)

    def load(row: pd.Series) -> np.ndarray:
        pixels = sources[row["split_source"]][int(row["position"])]["image"]
        return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))

    return load


def run_extract(config: ml_collections.ConfigDict) -> Path:
    """Extract (or finish extracting) every selected site for every sample; returns the features directory."""
    started = time.perf_counter()
    if config.model.family not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"{config.model.checkpoint} is a {config.model.family!r} model, which jaxprobe does not "
                          f"implement yet; supported families: {', '.join(SUPPORTED_MODEL_TYPES)}")
    workdir = Path(config.workdir)
    prepared = prepare_data(config)
    checkpoint, revision = resolve_checkpoint(config.model, workdir)
    loaded = load_model(checkpoint, config.model.dtype)
    sites = select_sites(sites_for(sown_names(loaded.config)), list(config.capture.sites))
    dims = site_dims(loaded, sites)
    index = store_index(prepared)
    check_workdir(workdir, len(index), dims, np.dtype(config.capture.feature_dtype).itemsize)
    processor = load_processor(checkpoint)
    prompt = build_prompt(processor, prepared.summary.class_names, config.capture.question)
    writer = FeatureStoreWriter(workdir / FEATURES_DIR, index, prepared.summary.class_names, dims,
                                fingerprint(config, checkpoint), config.capture.feature_dtype)
    load_image = image_loader(config)
    forward = PooledForward(loaded, sites, prompt.option_token_ids, data_mesh())

    def run_rows(rows: list[int]):
        images = [load_image(index.iloc[r]) for r in rows]
        return forward(encode(processor, prompt, images))

    written = extract_into(writer, list(range(len(index))), [0] * len(index), run_rows,
                           config.capture.batch_size, config.capture.chunk_rows)
    record_stage(workdir, "extract", config.to_dict(), {
        "seconds": round(time.perf_counter() - started, 2), "rows": len(index), "rows_written_this_run": written,
        "sites": len(sites), "checkpoint": str(checkpoint), "revision": revision,
        "counts": prepared.summary.counts, "skipped": prepared.summary.skipped, "prompt": prompt.text,
        "settings": settings_hash(config, "extract")})
    return workdir / FEATURES_DIR
