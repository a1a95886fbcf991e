"""The offline demo: the small synthetic_lesions dataset, split by patient."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.workdir = "runs/demo"

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic_lesions"
    config.data.config = "small"  # a builder config name
    config.data.manual_dir = ml_collections.config_dict.placeholder(str)
    config.data.data_dir = ml_collections.config_dict.placeholder(str)  # None: <workdir>/datasets

    config.split = ml_collections.ConfigDict()
    config.split.strategy = "grouped"  # stratified | grouped (by patient) | official
    config.split.val_fraction = 0.1
    config.split.test_fraction = 0.2
    config.split.seed = 0
    return config
