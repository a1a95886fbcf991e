"""Vision towers, one file per architecture, chosen by ``VisionConfig.tower``."""
