"""``jaxprobe probe WORKDIR``: every site of a FeatureStore, grouped by width, through the probe engine."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from jaxprobe.features import FeatureStore
from jaxprobe.parallel import probe_mesh
from jaxprobe.probes.engine import ProbeSettings, ProbeTask, probe_task
from jaxprobe.workdir import FEATURES_DIR, PROBES_FILE


def settings_from_config(section: ml_collections.ConfigDict) -> ProbeSettings:
    """The config's ``probe`` section as ``ProbeSettings`` (lists become tuples)."""
    values = {key: tuple(value) if isinstance(value, list | tuple) else value for key, value in section.items()}
    return ProbeSettings(**values)


def tasks_from_store(store: FeatureStore, sites: list[str] | None = None):
    """One ``ProbeTask`` per feature width; the store's ``split`` column says which rows train and test."""
    index = store.index
    train = np.flatnonzero(index["split"].to_numpy() == "train")
    test = np.flatnonzero(index["split"].to_numpy() == "test")
    labels, groups = index["label"].to_numpy(), index["group"].astype(str).to_numpy()
    for width_sites in store.sites_by_width(sites).values():
        yield ProbeTask(width_sites, store.stack(width_sites), labels, groups, train, test, len(store.class_names))


def run_probes(workdir: str | Path, settings: ProbeSettings, sites: list[str] | None = None) -> pd.DataFrame:
    """Probe every site of ``<workdir>/features`` and write ``<workdir>/probes.parquet``."""
    workdir = Path(workdir)
    store = FeatureStore.open(workdir / FEATURES_DIR)
    mesh = probe_mesh()
    frames = [probe_task(task, settings, mesh)
              for task in tqdm(list(tasks_from_store(store, sites)), desc="probing width groups", unit="group")]
    rows = pd.concat(frames, ignore_index=True)
    rows.to_parquet(workdir / PROBES_FILE, index=False)
    return rows
