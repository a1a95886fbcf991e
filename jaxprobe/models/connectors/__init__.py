"""Connectors from vision features to LLM embeddings, chosen by ``ConnectorConfig.kind``."""
