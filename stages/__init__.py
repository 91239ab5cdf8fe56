"""DVC stages of the CIFAR-10 pipeline: one module per stage, run as ``python -m stages.<name>``."""
