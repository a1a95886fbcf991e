"""From images to one vector per site: prompts, token bookkeeping, on-device pooling, extraction loop."""
