"""The pipeline's stages: one thin command per DVC stage, run as ``python -m stages <stage>``."""
