"""Feature Health Scores, failure-mode diagnosis and calibration from probe results (numpy/pandas only)."""
