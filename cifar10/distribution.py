"""How training is spread: one device, or Keras' DataParallel over devices and processes.

``train.distribute: data_parallel`` uses ``keras.distribution.DataParallel`` over every
device Keras lists: all local GPUs, or the CPU (JAX shows one CPU device unless
``XLA_FLAGS=--xla_force_host_platform_device_count=N``). With the environment variables
of ``keras.distribution.initialize`` set (``KERAS_DISTRIBUTION_JOB_ADDRESSES``,
``KERAS_DISTRIBUTION_NUM_PROCESSES``, ``KERAS_DISTRIBUTION_PROCESS_ID``), several
processes, on one machine or several, train one model: each feeds its own share of
every batch, and process 0 writes the outputs. Keras' ``fit`` runs unchanged in every
case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import keras

from cifar10.archive import Split
from cifar10.errors import PipelineError

PROCESS_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its index among the processes, and the devices in all."""

    process_index: int
    process_count: int
    device_count: int

    @property
    def is_chief(self) -> bool:
        """Whether this process logs and writes the outputs (process 0)."""
        return self.process_index == 0

    def describe(self) -> str:
        """For the log: how many devices and processes train."""
        processes = f" in {self.process_count} processes" if self.process_count > 1 else ""
        return f"{self.device_count} device(s){processes}"


def _process_settings() -> dict[str, str]:
    settings = {name: os.environ[name] for name in PROCESS_VARIABLES if os.environ.get(name)}
    if settings and len(settings) != len(PROCESS_VARIABLES):
        missing = ", ".join(name for name in PROCESS_VARIABLES if name not in settings)
        raise PipelineError(
            f"several processes need all of {', '.join(PROCESS_VARIABLES)}: set {missing}"
        )
    for name in PROCESS_VARIABLES[1:]:
        if name in settings and not settings[name].isdigit():
            raise PipelineError(f"{name} = {settings[name]!r}: must be a whole number")
    return settings


def set_up(distribute: str) -> Placement:
    """Configure Keras for ``train.distribute``; call before building the model."""
    if distribute == "none":
        return Placement(process_index=0, process_count=1, device_count=1)
    if distribute != "data_parallel":
        raise ValueError(f"unknown distribute {distribute!r}: use none or data_parallel")
    settings = _process_settings()
    if settings:
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    # Each process slices its own share of every batch (see local_share).
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )
    # As keras.distribution.initialize read them: one process without them.
    return Placement(
        process_index=int(settings.get("KERAS_DISTRIBUTION_PROCESS_ID", 0)),
        process_count=int(settings.get("KERAS_DISTRIBUTION_NUM_PROCESSES", 1)),
        device_count=len(devices),
    )


def local_share(split: Split, placement: Placement, batch_size: int) -> tuple[Split, int]:
    """Return this process's rows and batch size; the processes' batches make the global one.

    Rows are dealt out in turn (row i to process i % count), the same number to each
    (up to count - 1 rows are left out), so every process runs the same steps. Without
    shuffling, the global batches are exactly those of a single process.
    """
    count = placement.process_count
    if batch_size % count:
        raise PipelineError(
            f"train.batch_size = {batch_size}: must be a multiple of the {count} training processes"
        )
    rows = slice(placement.process_index, len(split.labels) - len(split.labels) % count, count)
    return Split(split.images[rows], split.labels[rows]), batch_size // count
