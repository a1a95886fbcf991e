"""One config per study cell (PAPER.md: 14 medical MLLMs + 2 general bases + LLaVA-Med v1.5 x 3 datasets).

Select a cell as ``study:<model>:<dataset>``, e.g. ``jaxprobe run study:lingshu_7b:busi --set
data.manual_dir=~/data/busi``. Hub ids are the publishers' repositories as of 2026; pin one with
``--set model.revision=<commit>``. Every cell's architecture is implemented (`jaxprobe models`); a checkpoint
whose config.json holds something a family does not implement stops before any work and says what.
"""

from pathlib import Path

import ml_collections

from jaxprobe.config import load_config_file

# name -> (hub id, config.json's model_type); `jaxprobe models` says which family implements each
MODELS = {
    "medvlm_r1_2b": ("JZPeterPan/MedVLM-R1", "qwen2_vl"),
    "huatuogpt_vision_7b_qwen25vl": ("FreedomIntelligence/HuatuoGPT-Vision-7B-Qwen2.5VL", "qwen2_5_vl"),
    "huatuogpt_vision_34b": ("FreedomIntelligence/HuatuoGPT-Vision-34B", "llava_llama"),
    "lingshu_7b": ("lingshu-medical-mllm/Lingshu-7B", "qwen2_5_vl"),
    "lingshu_32b": ("lingshu-medical-mllm/Lingshu-32B", "qwen2_5_vl"),
    "shizhengpt_7b_vl": ("FreedomIntelligence/ShizhenGPT-7B-VL", "qwen2_5_vl"),
    "shizhengpt_32b_vl": ("FreedomIntelligence/ShizhenGPT-32B-VL", "qwen2_5_vl"),
    "hulu_med_4b": ("ZJU-AI4H/Hulu-Med-4B", "hulumed_qwen3"),
    "hulu_med_7b": ("ZJU-AI4H/Hulu-Med-7B", "hulumed_qwen2"),
    "hulu_med_14b": ("ZJU-AI4H/Hulu-Med-14B", "hulumed_qwen3"),
    "hulu_med_32b": ("ZJU-AI4H/Hulu-Med-32B", "hulumed_qwen2"),
    "medgemma_4b": ("google/medgemma-4b-it", "gemma3"),
    "medgemma_27b": ("google/medgemma-27b-it", "gemma3"),
    "medgemma_1_5_4b": ("google/medgemma-1.5-4b-it", "gemma3"),
    "qwen25_vl_7b": ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
    "gemma_3_4b": ("google/gemma-3-4b-it", "gemma3"),
    # not in the study: the classic LLaVA-repository-layout medical MLLM (PAPER.md, "users will also ask for")
    "llava_med_v1_5_7b": ("microsoft/llava-med-v1.5-mistral-7b", "llava_mistral"),
}
DATASETS = ("busi", "covid19_ct", "chest_xray")
CELLS = tuple(f"{model}:{dataset}" for model in MODELS for dataset in DATASETS)


def get_config(cell: str = "qwen25_vl_7b:busi") -> ml_collections.ConfigDict:
    model, _, dataset = cell.partition(":")
    if model not in MODELS or dataset not in DATASETS:
        raise ValueError(f"unknown study cell {cell!r}; models: {sorted(MODELS)}; datasets: {list(DATASETS)}")
    hub_id, model_type = MODELS[model]
    config = load_config_file(Path(__file__).with_name("demo.py"))
    config.workdir = f"runs/{model}/{dataset}"
    config.data.name = dataset
    config.data.config = None
    config.model.checkpoint = hub_id
    config.model.family = model_type
    config.model.dtype = "bfloat16"
    config.capture.resolution = "native"
    config.capture.batch_size = 4
    return config
