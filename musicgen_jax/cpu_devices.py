"""Every CPU core at work: the host's CPU split into one JAX device per core, for tensor parallelism on CPU.

XLA:CPU runs a decode step's matrix-vector products on one thread, so one device reads the weights at one core's
share of the memory bandwidth while the other cores wait (HF's torch spreads its GEMVs over all its threads). With
one JAX CPU device per core, ``from_pretrained`` splits the layers' heads and ffn over them (the ``model`` axis of
:func:`musicgen_jax.sharding.make_mesh`; ``mesh="auto"``, the default) and each core streams its half of the weights
(``benchmarks/NOTES.md`` #14).

:func:`configure` runs when ``musicgen_jax`` is imported. It must come before JAX starts its backends (the first
JAX operation); it changes nothing when:

- ``MUSICGEN_JAX_CPU_DEVICES`` is ``1`` (or ``0``/``off``/``false``/``no``), or the user already chose a CPU
  device count (``jax.config.update("jax_num_cpu_devices", n)`` or ``--xla_force_host_platform_device_count`` in
  ``XLA_FLAGS``): their choice stands and models load on one device unless given a mesh;
- JAX's backends are already running (something ran a JAX operation before ``import musicgen_jax``).

Otherwise it asks for ``MUSICGEN_JAX_CPU_DEVICES`` devices (a number), or by default the largest power of two not
above the cores this process may use, at most :data:`MAX_DEVICES` (powers of two divide every MusicGen size's heads
and ffn). Only the CPU backend is affected: on a GPU or TPU host the models run on the accelerator as before, and
``jax.devices()`` is unchanged there; on a CPU-only host it lists the CPU devices.
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
    """Asks JAX for one CPU device per core (see the module docstring); returns the count set, or None."""
    global _chosen
    if _chosen is not None:
        return _chosen
    value = os.environ.get(ENV, "").strip().lower()
    if value in _OFF:
        return None
    if value:
        try:
            count = int(value)
        except ValueError:
            return None  # a malformed value leaves JAX's default (one CPU device)
        if count < 2:
            return None
    else:
        count = default_count()
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
