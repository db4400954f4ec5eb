"""Every CPU core at work (opt-in): the host's CPU split into one JAX device per core, for tensor parallelism.

XLA:CPU runs a decode step's matrix-vector products on one thread, so one device reads the weights at one core's
share of the memory bandwidth while the other cores wait (HF's torch spreads its GEMVs over all its threads). With
one JAX CPU device per core, ``from_pretrained`` (``mesh="auto"``, the default) splits the layers' heads and ffn over
them (the ``model`` axis of :func:`musicgen_jax.sharding.make_mesh`) and each core streams its share of the weights.
Measured on a 2-core AMD EPYC (``benchmarks/NOTES.md`` #14): the small model's decode step 110 -> 89 ms, end to end
2.10x -> 2.3x HF; but what stays replicated (the EnCodec codec) runs on both devices at once and got slower, and the
devices' collectives are XLA:CPU's in-process rendezvous (one benchmark probe deadlocked in one, once). So it is off
unless asked for.

:func:`configure` runs when ``musicgen_jax`` is imported and must come before JAX starts its backends (the first JAX
operation). ``MUSICGEN_JAX_CPU_DEVICES=N`` (N >= 2) asks for N devices, ``=auto`` for the largest power of two not
above the cores this process may use, at most :data:`MAX_DEVICES` (powers of two divide every MusicGen size's heads
and ffn). Nothing changes when the variable is unset, ``1`` or ``off``, when the user already chose a CPU device count
(``jax.config.update("jax_num_cpu_devices", n)`` or ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``: their
choice stands and models load on one device unless given a mesh), or when JAX's backends already run. Only the CPU
backend is affected: on a GPU or TPU host the models run on the accelerator as before.
"""

from __future__ import annotations

import os

ENV = "MUSICGEN_JAX_CPU_DEVICES"
MAX_DEVICES = 8
_OFF = {"0", "1", "off", "false", "no"}
_chosen: int | None = None  # the device count configure() set, or None when it set nothing


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_count(cores: int | None = None) -> int:
    """The largest power of two not above ``cores`` (default :func:`usable_cores`) and :data:`MAX_DEVICES`."""
    cores = min(usable_cores() if cores is None else cores, MAX_DEVICES)
    count = 1
    while count * 2 <= cores:
        count *= 2
    return count


def configure() -> int | None:
    """Asks JAX for the CPU devices ``MUSICGEN_JAX_CPU_DEVICES`` names (see the module docstring); returns the count
    set, or None."""
    global _chosen
    if _chosen is not None:
        return _chosen
    value = os.environ.get(ENV, "").strip().lower()
    if not value or value in _OFF:
        return None
    if value == "auto":
        count = default_count()
    else:
        try:
            count = int(value)
        except ValueError:
            return None  # a malformed value leaves JAX's default (one CPU device)
    if count < 2:
        return None
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    import jax

    if jax.config.jax_num_cpu_devices != -1:  # the user's own choice
        return None
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backends already run: too late to change the device count
        return None
    _chosen = count
    return count


def chosen() -> int | None:
    """The CPU device count :func:`configure` set in this process, or None."""
    return _chosen
