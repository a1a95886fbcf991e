"""The files of a run's work directory, named in one place (DESIGN.md: "Work directory of a run")."""

MANIFEST_FILE = "manifest.json"  # resolved config, versions, devices, per-stage facts
SPLIT_FILE = "split.json"  # the train/val/test assignment by sample id
FEATURES_DIR = "features"  # the FeatureStore (jaxprobe.features)
PROBES_FILE = "probes.parquet"  # one row per site x kind x lambda x fold
SCORES_FILE = "scores.json"  # FHS profile, diagnosis, calibration, the curve
SUMMARY_FILE = "summary.parquet"  # one row per run, for comparisons
REPORT_FILE = "report.html"
