"""``jaxprobe probe WORKDIR``: the sites of a FeatureStore (all, or those matching ``probe.sites``), streamed in
memory-sized chunks of equal width through the probe engine, into ``probes.parquet``.

Probing a subset keeps the other sites' rows of an existing ``probes.parquet`` made with the same settings and
features (the settings are stored in the file's metadata); rows made with other settings are never mixed with
new ones: a subset run over such a file is refused, a run over all its sites replaces it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from jaxprobe.errors import ConfigError, FeatureError
from jaxprobe.features import FeatureStore
from jaxprobe.manifest import RESULT_NEUTRAL_KEYS
from jaxprobe.parallel import probe_mesh
from jaxprobe.probes import store as store_io
from jaxprobe.probes.engine import probe_task
from jaxprobe.probes.settings import ProbeSettings, settings_from_config
from jaxprobe.workdir import FEATURES_DIR, PROBES_FILE

__all__ = ["enable_compilation_cache", "open_store", "probe_store", "run_probes", "settings_from_config"]

METADATA_KEY = b"jaxprobe.probe"
NOT_IN_RESULTS = RESULT_NEUTRAL_KEYS["probe"]  # which sites are probed and how they stream, not a site's rows


CACHE_ENV = "JAXPROBE_COMPILATION_CACHE"  # a directory, or "off"


def enable_compilation_cache() -> None:
    """Keep compiled probe programs on disk (``$JAXPROBE_COMPILATION_CACHE``, default ~/.cache/jaxprobe/xla), so
    the next cell with the same shapes (a study sweeps 84) skips XLA compilation: measured, ~10-25 s of a
    BUSI-shaped cell on this 2-core machine."""
    location = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "jaxprobe" / "xla"))
    if location.lower() not in ("", "off", "0"):
        jax.config.update("jax_compilation_cache_dir", location)


def _stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def open_store(path: Path) -> FeatureStore:
    """``FeatureStore.open`` that reports a meta.json missing keys as a FeatureError, not a KeyError."""
    try:
        return FeatureStore.open(path)
    except KeyError as error:
        raise FeatureError(f"{path}/meta.json lacks the key {error}; a store needs num_samples, rows_done, "
                           "class_names and sites (see the README's feature store section)") from error


def probe_store(store: FeatureStore, settings: ProbeSettings, sites: list[str],
                note: Callable[[str], None] = _stderr) -> pd.DataFrame:
    """Rows of every selected site of ``store``, width group by width group, chunk by chunk."""
    rows = store_io.store_rows(store, note)
    mesh = probe_mesh()
    tasks = list(store_io.tasks(store, sites, rows, settings.memory_gb, mesh.devices.size))
    frames = [probe_task(task, settings, mesh) for task in tqdm(tasks, desc="probing site chunks", unit="chunk")]
    return pd.concat(frames, ignore_index=True)


def _settings_key(settings: ProbeSettings, store: FeatureStore) -> dict:
    values = {k: v for k, v in dataclasses.asdict(settings).items() if k not in NOT_IN_RESULTS}
    return {"settings": json.loads(json.dumps(values)), "features": store.meta.get("fingerprint")}


def _existing(path: Path) -> tuple[pd.DataFrame | None, dict | None]:
    if not path.is_file():
        return None, None
    metadata = pq.read_schema(path).metadata or {}
    key = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None
    return pd.read_parquet(path), key


def _kept_rows(path: Path, key: dict, sites: list[str]) -> pd.DataFrame | None:
    """Rows of ``path`` for sites other than ``sites`` when they were made with the same ``key`` (checked before
    any probing, so a refusal wastes no work)."""
    old, old_key = _existing(path)
    if old is None:
        return None
    others = old[~old["site"].isin(sites)]
    if others.empty:
        return None
    if old_key != key:
        raise ConfigError(f"{path} holds probes of sites {sorted(others.site.unique())[:5]} made with other probe "
                          "settings or features; probing only some sites now would mix the two. Probe all sites "
                          f"(probe.sites=('*',)) or move {path.name} away first")
    return others


def _write(path: Path, rows: pd.DataFrame, key: dict) -> None:
    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(key)})
    temporary = path.with_suffix(".tmp")
    pq.write_table(table, temporary)
    temporary.replace(path)


def _baseline_columns(rows: pd.DataFrame, store: FeatureStore, settings: ProbeSettings, sites: list[str],
                      note: Callable[[str], None]) -> pd.DataFrame:
    """``baseline_accuracy`` and ``over_baseline`` on the selected rows, from the same probes on a random-weights
    model's features (``probe.baseline_features``)."""
    baseline = open_store(Path(settings.baseline_features))
    ours, theirs = store.index, baseline.index
    columns = [c for c in ("id", "label", "split") if c in ours and c in theirs]
    if "id" not in columns or not ours[columns].reset_index(drop=True).equals(theirs[columns].reset_index(drop=True)):
        raise FeatureError(f"the baseline store {baseline.path} must hold the same rows (id, label, split, in the "
                           f"same order) as {store.path}; extract it with the same data and split config")
    missing = sorted(set(sites) - set(baseline.sites))
    if missing:
        raise FeatureError(f"the baseline store {baseline.path} lacks sites {missing[:5]}; extract them too")
    quick = dataclasses.replace(settings, control_task=False, permutations=0, bootstrap=0, baseline_features=None)
    chosen = probe_store(baseline, quick, sites, note)
    chosen = chosen[chosen.selected].set_index(["site", "kind"])["accuracy"]
    keys = pd.MultiIndex.from_frame(rows[["site", "kind"]])
    rows["baseline_accuracy"] = np.where(rows.selected, chosen.reindex(keys).to_numpy(), np.nan)
    rows["over_baseline"] = rows["accuracy"] - rows["baseline_accuracy"]
    return rows


def run_probes(workdir: str | Path, settings: ProbeSettings, note: Callable[[str], None] = _stderr) -> pd.DataFrame:
    """Probe the sites of ``<workdir>/features`` matching ``settings.sites`` and write ``<workdir>/probes.parquet``
    (with the rows of other sites it already holds for the same settings); returns this run's rows."""
    workdir = Path(workdir)
    store = open_store(workdir / FEATURES_DIR)
    sites = store_io.select_sites(store.sites, settings.sites)
    key = _settings_key(settings, store)
    kept = _kept_rows(workdir / PROBES_FILE, key, sites)
    rows = probe_store(store, settings, sites, note)
    if settings.baseline_features:
        rows = _baseline_columns(rows, store, settings, sites, note)
    _write(workdir / PROBES_FILE, rows if kept is None else pd.concat([kept, rows], ignore_index=True), key)
    return rows
