"""Datasets: TFDS builders writing array_record, their public layouts, and splits."""

from jaxprobe.data.api import (
    DATASETS,
    DatasetSummary,
    build,
    default_data_dir,
    info,
    load,
    prepared_builder,
    read_index,
)

__all__ = ["DATASETS", "DatasetSummary", "build", "default_data_dir", "info", "load", "prepared_builder", "read_index"]
