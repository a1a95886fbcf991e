"""The report: files exist, the HTML is self-contained, plots are real PNGs, verdicts are printed."""

from __future__ import annotations

import pandas as pd

from jaxprobe.report.write import write_report
from jaxprobe.scoring.diagnosis import Thresholds
from jaxprobe.scoring.profile import ScoreSettings, score_run
from tests.test_diagnosis import HEALTHY, _probe_rows
from tests.test_profile import _index


def test_report_files(tmp_path):
    probes = _probe_rows({k: v for k, v in dict(HEALTHY, connector=[0.8]).items() if k != "answer"})
    scores = score_run(probes, _index(), ScoreSettings(thresholds=Thresholds(min_test_images=20), resamples=100),
                       ["no", "yes"])
    page = write_report(tmp_path, "tiny-model x synthetic", scores).read_text()
    assert page.count("data:image/png;base64,") == 2 and "src=\"http" not in page
    assert "connector projection fidelity</b>: <span class=\"inconclusive\">inconclusive" in page
    for name in ("curve.png", "profile.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "scores.json").exists()  # scores.json belongs to the scoring stage, not the report
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    assert summary.loc[0, "status_connector"] == "inconclusive" and summary.loc[0, "run"] == "tiny-model x synthetic"
