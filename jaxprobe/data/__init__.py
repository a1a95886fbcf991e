"""Datasets: TFDS builders writing array_record, their public layouts, and splits."""

from jaxprobe.data.api import (
    DATA_DIR_ENV,
    DATASETS,
    DatasetSummary,
    build,
    default_data_dir,
    info,
    load,
    prepared_builder,
    read_index,
)

__all__ = ["DATASETS", "DATA_DIR_ENV", "DatasetSummary", "build", "default_data_dir", "info", "load",
           "prepared_builder", "read_index"]
