"""The library the pipeline's stages share: one module per concept (docs/architecture.md)."""
