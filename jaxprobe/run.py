"""``jaxprobe run CONFIG``: extract -> probe -> score/report, skipping stages whose outputs are up to date.

A stage is skipped when its output exists, is newer than its input, and was made with the same settings
(a hash of the config sections it depends on, kept in the manifest). The standalone ``probe`` and ``score``
commands run the same stage functions: they default to the work directory's own resolved config (the
manifest's), refuse settings that differ from what the earlier stages were made with, and record their stage,
so a later ``run`` sees the state they left. With ``finetune.enabled`` the run is before -> fine-tune -> after in
sub-directories (``jaxprobe.finetune.before_after``).
"""

from __future__ import annotations

import time
from pathlib import Path

import ml_collections
import pandas as pd

from jaxprobe.config import apply_override, changed_keys, config_from_dict, load_config, validate_config
from jaxprobe.errors import ConfigError
from jaxprobe.features import META_FILE
from jaxprobe.manifest import read_manifest, record_stage, settings_hash
from jaxprobe.parallel import is_primary
from jaxprobe.probes.run import run_probes, settings_from_config
from jaxprobe.report.write import report_workdir
from jaxprobe.scoring.run import score_workdir
from jaxprobe.workdir import FEATURES_DIR, PROBES_FILE, REPORT_FILE, SCORES_FILE, VISION_BASELINE_FILE

# Config sections a standalone stage must share with what is already in the work directory: the features depend
# on data, model and capture; the store's split column is written by extraction (so a standalone `probe` cannot
# change the split: `run` re-labels the store); the probes depend on the probe section.
FIXED_SECTIONS = {"probe": ("data", "model", "capture", "split"), "score": ("data", "model", "capture", "split",
                                                                           "probe")}
FALLBACK_CONFIG = "demo"  # for a work directory without a manifest (a feature store made outside jaxprobe)


def _up_to_date(workdir: Path, stage: str, output: Path, source: Path, config) -> bool:
    recorded = read_manifest(workdir).get("stages", {}).get(stage, {})
    return (output.is_file() and source.is_file() and output.stat().st_mtime >= source.stat().st_mtime
            and recorded.get("settings") == settings_hash(config, stage))


def workdir_config(workdir: str | Path, name: str | None, overrides: list[str], log=print) -> ml_collections.ConfigDict:
    """The config a standalone stage runs with: ``name`` if given, else the work directory's own (its manifest),
    else the demo config; ``overrides`` on top; ``workdir`` is always the directory given."""
    workdir = Path(workdir)
    recorded = read_manifest(workdir).get("config")
    if name is None and recorded is not None:
        config = config_from_dict(recorded, log)
        for assignment in overrides:
            apply_override(config, assignment)
        validate_config(config)
    else:
        if name is None:
            log(f"note: {workdir} has no manifest.json with a config; using the {FALLBACK_CONFIG} config's settings "
                "(pass --config to choose)")
        config = load_config(name or FALLBACK_CONFIG, overrides)
    config.workdir = str(workdir)
    return config


def check_earlier_stages(workdir: Path, config: ml_collections.ConfigDict, stage: str) -> None:
    """Refuse settings the outputs of earlier stages were not made with (they would be silently mixed)."""
    recorded = read_manifest(workdir).get("config")
    if recorded is None:
        return
    changed = changed_keys(config, recorded, FIXED_SECTIONS[stage])
    if changed:
        raise ConfigError(f"{workdir}'s earlier stages were made with other values of {changed[:8]}; `jaxprobe "
                          f"{stage}` would mix outputs of two configs. Leave those keys as recorded (drop --config "
                          "and those --set), or use `jaxprobe run` with the new config (a new work directory for new "
                          "data, model or capture settings)")


def probe_stage(workdir: Path, config: ml_collections.ConfigDict,
                recorded: ml_collections.ConfigDict | None = None) -> pd.DataFrame:
    """Fit probes on the work directory's features and record the stage (with ``recorded``, the config to keep
    in the manifest when ``config`` is a one-off selection of sites); returns the probe rows."""
    started = time.perf_counter()
    rows = run_probes(workdir, settings_from_config(config.probe))
    record_stage(workdir, "probe", (recorded or config).to_dict(), {"seconds": round(time.perf_counter() - started, 2),
                                                      "rows": len(rows), "settings": settings_hash(config, "probe")})
    return rows


def score_stage(workdir: Path, config: ml_collections.ConfigDict) -> Path:
    """Score, write the report, record the stage; returns the report's path."""
    started = time.perf_counter()
    score_workdir(workdir, config)
    report = report_workdir(workdir)
    record_stage(workdir, "score", config.to_dict(), {"seconds": round(time.perf_counter() - started, 2),
                                                      "settings": settings_hash(config, "score")})
    return report


def run_all(config: ml_collections.ConfigDict, log=print) -> Path:
    """Run every stage that is not up to date; returns the report's path."""
    from jaxprobe.capture.extract import run_extract

    if "finetune" in config and config.finetune.enabled:
        from jaxprobe.finetune.before_after import run_before_after

        return run_before_after(config, log)
    workdir = Path(config.workdir)
    features_meta = workdir / FEATURES_DIR / META_FILE
    run_extract(config)  # resumes, and is a quick no-op when the store is complete for this config
    if not is_primary():  # probes and scores are one process's work (process 0)
        return workdir / REPORT_FILE
    probes = workdir / PROBES_FILE
    if _up_to_date(workdir, "probe", probes, features_meta, config):
        log(f"probe: up to date ({probes})")
    else:
        probe_stage(workdir, config)
    report = workdir / REPORT_FILE
    baseline = workdir / VISION_BASELINE_FILE  # the visual verdict's reference, when fine-tuning wrote one
    if (_up_to_date(workdir, "score", workdir / SCORES_FILE, probes, config) and report.is_file()
            and not (baseline.is_file() and baseline.stat().st_mtime > (workdir / SCORES_FILE).stat().st_mtime)):
        log(f"score: up to date ({report})")
        return report
    return score_stage(workdir, config)
