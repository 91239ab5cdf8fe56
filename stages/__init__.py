"""The pipeline's stages, one module per DVC stage, and the few modules they share."""

import os

# Keras trains on its JAX backend (see stages/model.py for why). Keras reads this when
# it is first imported, so it is set here, before any stage module can import Keras.
os.environ.setdefault("KERAS_BACKEND", "jax")
