"""The study's sweep: every cell of configs/study.py, for `for cell in ...; do jaxprobe run study:$cell; done`."""

import importlib.util
from pathlib import Path

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    path = Path(__file__).with_name("study.py")
    spec = importlib.util.spec_from_file_location("jaxprobe_config_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return ml_collections.ConfigDict({"cells": list(study.CELLS)})
