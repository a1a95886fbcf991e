"""jaxprobe: layer-wise feature probing of medical multimodal LLMs in JAX/Flax."""

from jaxprobe.errors import CheckpointError, ConfigError, DatasetError, FeatureError, JaxprobeError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "DatasetError", "FeatureError", "JaxprobeError", "__version__"]
