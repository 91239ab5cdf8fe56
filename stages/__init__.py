"""The pipeline's stages, one module per DVC stage, and the few modules they share."""
