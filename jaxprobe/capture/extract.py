"""``jaxprobe extract CONFIG``: dataset + checkpoint -> ``<workdir>/features`` (resumable) + manifest.

The store holds every sample of the dataset; the train/val/test split is only the index's ``split`` column, so a
new split (``--set split.seed=3``) re-labels rows of a finished store instead of extracting again. A store whose
features are complete for this config makes extraction a no-op that never loads the model.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import pandas as pd

from jaxprobe import data
from jaxprobe.capture.answering import Answerer, AnswerSettings
from jaxprobe.capture.forward import sown_shapes
from jaxprobe.capture.generate import eos_token_ids
from jaxprobe.capture.images import check_resolution, data_sources, image_loader, stored_sizes, target_sizes
from jaxprobe.capture.loop import extract_into
from jaxprobe.capture.sites import Site, select_sites, sites_for
from jaxprobe.errors import ConfigError
from jaxprobe.families.loading import load_model
from jaxprobe.families.registry import family_for_model_type, family_of, supported_model_types
from jaxprobe.features import META_FILE, FeatureStore, FeatureStoreWriter, assign_split, settings_fingerprint
from jaxprobe.manifest import read_manifest, record_stage, settings_hash
from jaxprobe.parallel import DATA_AXIS, barrier, broadcast, is_primary, local_rows, make_mesh
from jaxprobe.pipeline import PreparedData, data_dir_of, prepare_data
from jaxprobe.weights import cache
from jaxprobe.weights.hub import resolve_source
from jaxprobe.weights.reader import read_config_json
from jaxprobe.workdir import FEATURES_DIR

TINY_PREFIX = "tiny:"
DISK_MARGIN = 1.2  # ask for 20% more free space than the feature arrays need
CAPTURE_INERT = ("batch_size", "chunk_rows")  # capture settings that cannot change a feature
UNUSED_SPLIT = "unused"  # rows the split leaves out (e.g. COVID-CT images in no official list)


def check_writable(workdir: Path) -> None:
    """Fail before any work (dataset build, download) on a work directory that cannot be written."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"work directory {workdir} is not writable ({error}); choose another with --set "
                          "workdir=DIR") from error


def check_disk(workdir: Path, rows: int, dims: dict[str, int], itemsize: int) -> None:
    """Fail before loading the model when the feature arrays cannot fit on the work directory's disk."""
    needed = int(rows * sum(dims.values()) * itemsize * DISK_MARGIN)
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise ConfigError(f"features need about {needed / 2**30:.2f} GiB in {workdir} but only "
                          f"{free / 2**30:.2f} GiB is free; free space or select fewer sites (capture.sites)")


def check_family_setting(model: ml_collections.ConfigDict) -> None:
    """``model.family`` (a config.json model_type) set for a family jaxprobe lacks: refuse before any work."""
    if model.family and model.family not in supported_model_types():
        raise ConfigError(f"{model.checkpoint} is a {model.family!r} model, which jaxprobe does not implement yet; "
                          f"supported model_types: {', '.join(supported_model_types())}")


def resolve_checkpoint(model: ml_collections.ConfigDict, workdir: Path) -> tuple[Path, str | None]:
    """A local checkpoint directory for ``model.checkpoint`` (``tiny:<model_type>`` is written into the workdir)."""
    if model.checkpoint.startswith(TINY_PREFIX):
        model_type = model.checkpoint[len(TINY_PREFIX):]
        target = workdir / "checkpoint" / model_type
        if not (target / "config.json").is_file():
            family_for_model_type(model_type).tiny_checkpoint(target, model_type, seed=0)
        return target, None
    local, revision = resolve_source(model.checkpoint, model.revision)
    model_type = read_config_json(local).get("model_type")
    if model.family and model.family != model_type:
        raise ConfigError(f"model.family={model.family!r} but {model.checkpoint} is a {model_type!r} checkpoint; "
                          "drop model.family (it is read from config.json) or fix it")
    return Path(local), revision


def _files_fingerprint(directory: Path) -> str:
    """Names, sizes and modification times of a directory's files: changes whenever a file is rewritten."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(directory)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def feature_settings(config: ml_collections.ConfigDict, checkpoint: Path) -> dict:
    """Everything the features depend on, and nothing they do not (batch size, the split, where data lives)."""
    prepared = data.prepared_builder(config.data.name, data_dir_of(config), config.data.config)
    settings = {
        "data": {"name": config.data.name, "config": str(config.data.config),
                 "prepared": _files_fingerprint(Path(prepared.data_dir))},
        "model": {"checkpoint": config.model.checkpoint, "revision": config.model.revision,
                  "dtype": config.model.dtype, "files": cache.fingerprint(checkpoint)[:16]},
        "capture": {key: value for key, value in config.capture.to_dict().items() if key not in CAPTURE_INERT},
    }
    if config.model.get("adapter"):  # a fine-tuned model: the adapter's content is part of what was probed
        from jaxprobe.finetune.adapter import adapter_fingerprint

        settings["model"]["adapter"] = {"path": config.model.adapter, "files": adapter_fingerprint(
            config.model.adapter)}
    return settings


def store_index(prepared: PreparedData) -> pd.DataFrame:
    """The feature index: every sample of the dataset, with its assigned split (``unused`` if it has none)."""
    index = prepared.index.rename(columns={"split": "split_source"}).reset_index(drop=True)
    split = np.full(len(index), UNUSED_SPLIT, dtype=object)
    for name, rows in prepared.assignment.items():
        split[rows] = name
    index["split"] = split
    index.insert(0, "row", np.arange(len(index)))
    return index


def plan_rows(config: ml_collections.ConfigDict, index: pd.DataFrame, processor: Any,
              builder: Any) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """The store's rows ordered by size bucket (one compilation per bucket; a batch never mixes sizes) and the
    (height, width) each row is fed at."""
    stored = stored_sizes(data_sources(builder, decode=False), index)
    sizes = target_sizes(config.capture.resolution, processor, stored, config.capture.bucket_step)
    order = sorted(range(len(index)), key=lambda row: sizes[row])  # stable: dataset order inside a bucket
    ordered = index.iloc[order].reset_index(drop=True)
    ordered["row"] = np.arange(len(ordered))
    return ordered, [sizes[row] for row in order]


def _sites(family: Any, checkpoint: Path, patterns: list[str]) -> tuple[Any, Any, list[Site]]:
    """The model config, its site layout and the selected sites (from shapes alone: no params are loaded)."""
    model_config = family.parse_config(read_config_json(checkpoint))
    layout = family.site_layout(model_config)
    return model_config, layout, select_sites(sites_for(sown_shapes(family, model_config), layout.vision_cls),
                                              patterns)


def complete_store(path: Path, settings: dict, sites: list[Site]) -> bool:
    """True if ``path`` holds every row of features made with exactly these settings and sites."""
    if not (path / META_FILE).is_file():
        return False
    meta = FeatureStore.read_meta(path)
    return (meta.get("fingerprint") == settings_fingerprint(settings) and meta["rows_done"] == meta["num_samples"]
            and list(meta["sites"]) == [site.name for site in sites])


class FollowingWriter:
    """A non-primary process's view of the store: it starts where process 0 starts and writes nothing."""

    def __init__(self, rows_done: int):
        self._rows_done = rows_done

    @property
    def rows_done(self) -> int:
        return self._rows_done

    def write_chunk(self, start: int, features: dict, answers: Any = None) -> None:
        self._rows_done = start + len(next(iter(features.values())))


def _prepare(config: ml_collections.ConfigDict, workdir: Path):
    """Dataset and checkpoint, made by process 0 before any other process looks for them."""
    if is_primary():
        check_writable(workdir)
        prepared, (checkpoint, revision) = prepare_data(config), resolve_checkpoint(config.model, workdir)
    barrier("jaxprobe-data-and-checkpoint")
    if not is_primary():
        prepared, (checkpoint, revision) = prepare_data(config), resolve_checkpoint(config.model, workdir)
    return prepared, checkpoint, revision


def _row_runner(answerer: Answerer, load_image, mesh, key: jax.Array):
    """rows of one batch -> (features, answers); each process loads and encodes only the rows its devices hold."""
    size = mesh.shape[DATA_AXIS]

    def run_rows(rows: list[int]):
        count = len(rows)
        global_batch = -(-count // size) * size
        start, stop = local_rows(mesh, global_batch)
        local = [rows[min(i, count - 1)] for i in range(start, stop)]  # the padding repeats the last row
        return answerer([load_image(r) for r in local], jax.random.fold_in(key, rows[0]), global_batch, count)

    return run_rows


def _variants_record(answerer: Answerer) -> dict:
    return {v.name: {"order": v.order, "prompt": p.text}
            for v, p in zip(answerer.variants, answerer.prompts, strict=True)}


def run_extract(config: ml_collections.ConfigDict) -> Path:
    """Extract (or finish extracting) every selected site for every sample; returns the features directory.

    In a multi-process run every process calls this; process 0 alone writes the store and the manifest."""
    started = time.perf_counter()
    workdir = Path(config.workdir)
    check_family_setting(config.model)
    check_resolution(config.capture.resolution, config.capture.bucket_step)
    answer_settings = AnswerSettings.from_config(config.capture)
    prepared, checkpoint, revision = _prepare(config, workdir)
    family = family_of(checkpoint)
    _, layout, sites = _sites(family, checkpoint, list(config.capture.sites))
    index, settings, store = store_index(prepared), feature_settings(config, checkpoint), workdir / FEATURES_DIR
    facts = {"rows": len(index), "sites": len(sites), "checkpoint": str(checkpoint), "revision": revision,
             "family": family.name, "counts": prepared.summary.counts, "skipped": prepared.summary.skipped,
             "settings": settings_hash(config, "extract"), "processes": jax.process_count(),
             "adapter": config.model.get("adapter")}
    if broadcast(is_primary() and complete_store(store, settings, sites)):
        if is_primary():
            resplit = assign_split(store, index.set_index("id")["split"])
            previous = read_manifest(workdir).get("stages", {}).get("extract", {})
            record_stage(workdir, "extract", config.to_dict(), {**previous, **facts, "up_to_date": True,
                                                                "resplit": resplit})
        return store
    dims = {site.name: site.dim for site in sites}
    if is_primary():
        check_disk(workdir, len(index), dims, np.dtype(config.capture.feature_dtype).itemsize)
    processor = family.processor(checkpoint)
    builder = data.prepared_builder(config.data.name, data_dir_of(config), config.data.config)
    index, sizes = plan_rows(config, index, processor, builder)
    mesh = make_mesh(config.mesh.data, config.mesh.model)
    use_cache = config.model.cache and jax.process_count() == 1  # one process writes an orbax entry
    loaded = load_model(checkpoint, config.model.dtype, mesh, config.model.cache_dir if use_cache else False)
    if config.model.get("adapter"):
        from jaxprobe.finetune.adapter import with_adapter

        loaded = with_adapter(loaded, config.model.adapter)
    answerer = Answerer(loaded, processor, prepared.summary.class_names, config.capture.question, answer_settings,
                        sites, mesh, eos_token_ids(checkpoint, processor.tokenizer))
    writer = (FeatureStoreWriter(store, index, prepared.summary.class_names, dims, settings,
                                 config.capture.feature_dtype, layout.to_json()) if is_primary() else None)
    start = broadcast(writer.rows_done if writer is not None else 0)
    writer = writer if writer is not None else FollowingWriter(start)
    run_rows = _row_runner(answerer, image_loader(data_sources(builder), index, sizes), mesh,
                           jax.random.key(answer_settings.seed))
    written = extract_into(writer, list(range(len(index))), sizes, run_rows, config.capture.batch_size,
                           config.capture.chunk_rows, progress=is_primary())
    if is_primary():
        assign_split(store, index.set_index("id")["split"])
        record_stage(workdir, "extract", config.to_dict(), {
            **facts, "seconds": round(time.perf_counter() - started, 2), "rows_written_this_run": written,
            "size_buckets": {f"{h}x{w}": sizes.count((h, w)) for h, w in sorted(set(sizes))},
            "prompt": answerer.prompt.text, "answer_variants": _variants_record(answerer),
            "params_cache": str(loaded.cache_entry), "params_cache_hit": loaded.cache_hit})
    barrier("jaxprobe-extracted")
    return store
