"""``jaxprobe run CONFIG``: extract -> probe -> score/report, skipping stages whose outputs are up to date.

A stage is skipped when its output exists, is newer than its input, and was made with the same settings
(a hash of the config sections it depends on, kept in the manifest).
"""

from __future__ import annotations

import time
from pathlib import Path

import ml_collections

from jaxprobe.features import META_FILE
from jaxprobe.manifest import read_manifest, record_stage, settings_hash
from jaxprobe.parallel import is_primary
from jaxprobe.probes.run import run_probes, settings_from_config
from jaxprobe.report.write import report_workdir
from jaxprobe.scoring.run import score_workdir
from jaxprobe.workdir import FEATURES_DIR, PROBES_FILE, REPORT_FILE, SCORES_FILE


def _up_to_date(workdir: Path, stage: str, output: Path, source: Path, config) -> bool:
    recorded = read_manifest(workdir).get("stages", {}).get(stage, {})
    return (output.is_file() and source.is_file() and output.stat().st_mtime >= source.stat().st_mtime
            and recorded.get("settings") == settings_hash(config, stage))


def run_all(config: ml_collections.ConfigDict, log=print) -> Path:
    """Run every stage that is not up to date; returns the report's path."""
    from jaxprobe.capture.extract import run_extract

    workdir = Path(config.workdir)
    features_meta = workdir / FEATURES_DIR / META_FILE
    run_extract(config)  # resumes, and is a quick no-op when the store is complete for this config
    if not is_primary():  # probes and scores are one process's work (process 0)
        return workdir / REPORT_FILE
    probes = workdir / PROBES_FILE
    if _up_to_date(workdir, "probe", probes, features_meta, config):
        log(f"probe: up to date ({probes})")
    else:
        started = time.perf_counter()
        rows = run_probes(workdir, settings_from_config(config.probe))
        payload = {"seconds": round(time.perf_counter() - started, 2), "rows": len(rows),
                   "settings": settings_hash(config, "probe")}
        record_stage(workdir, "probe", config.to_dict(), payload)
    report = workdir / REPORT_FILE
    if _up_to_date(workdir, "score", workdir / SCORES_FILE, probes, config) and report.is_file():
        log(f"score: up to date ({report})")
        return report
    started = time.perf_counter()
    score_workdir(workdir, config)
    report = report_workdir(workdir)
    record_stage(workdir, "score", config.to_dict(), {"seconds": round(time.perf_counter() - started, 2),
                                                      "settings": settings_hash(config, "score")})
    return report
