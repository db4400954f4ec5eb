"""Where each side runs (``--device cpu|gpu|tpu``), in which dtype, and the numerics settings that go with it.

``plan`` is pure (the CLI's choices -> a ``Target``); ``prepare_environment`` sets what must be set before JAX is
imported; ``check`` compares the target with what JAX and torch actually see (a one-line error otherwise);
``configure`` applies the matmul settings. HF PyTorch runs on ``cpu`` or ``cuda``; on TPU only JAX runs.
"""

from __future__ import annotations

import dataclasses
import os

DEVICES = ("cpu", "gpu", "tpu")
DTYPES = ("float32", "bfloat16")
NO_TORCH_ON_TPU = "no torch on TPU"
JAX_ONLY = "--jax-only"


@dataclasses.dataclass(frozen=True)
class Target:
    """One run's placement. ``torch_device``: where HF runs (None: HF does not run; ``hf_absent`` says why)."""

    device: str  # cpu | gpu | tpu: JAX's default backend must be this
    dtype: str  # float32 | bfloat16: both sides' weights and activations
    torch_device: str | None  # "cpu" | "cuda" | None
    hf_absent: str = ""

    @property
    def accelerator(self) -> bool:
        return self.device != "cpu"

    @property
    def runs_hf(self) -> bool:
        return self.torch_device is not None

    @property
    def exact_float32(self) -> bool:
        """float32 matmuls without TF32 / bf16 passes (set by ``configure`` on accelerators)."""
        return self.dtype == "float32"


def plan(device: str, dtype: str = "float32", jax_only: bool = False) -> Target:
    """The target of ``--device`` / ``--dtype`` / ``--jax-only``."""
    if device not in DEVICES:
        raise ValueError(f"--device {device!r}: one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: one of {', '.join(DTYPES)}")
    if device == "tpu":
        return Target(device, dtype, None, NO_TORCH_ON_TPU)
    if jax_only:
        return Target(device, dtype, None, JAX_ONLY)
    return Target(device, dtype, "cuda" if device == "gpu" else "cpu")


def prepare_environment(target: Target, environ=os.environ) -> dict:
    """Environment JAX reads at import, set only where the user has not set it; returns what was set.

    cpu: ``JAX_PLATFORMS=cpu`` (a GPU machine's JAX would otherwise pick its GPU). gpu:
    ``XLA_PYTHON_CLIENT_PREALLOCATE=false``: JAX grows its GPU pool on demand instead of taking 75% of the memory at
    start, so that torch, in the same process, has room (both sides' peaks are then read from their allocators)."""
    wanted = {}
    if target.device == "cpu":
        wanted["JAX_PLATFORMS"] = "cpu"
    elif target.device == "gpu":
        wanted["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    done = {}
    for key, value in wanted.items():
        if key not in environ:
            environ[key] = value
            done[key] = value
    return done


def check(target: Target) -> str | None:
    """None when JAX (and torch, where HF runs) see the target's device; else the one-line reason."""
    import jax

    backend = jax.default_backend()
    if backend != target.device:
        hint = f", JAX_PLATFORMS={os.environ['JAX_PLATFORMS']}" if os.environ.get("JAX_PLATFORMS") else ""
        name = target.device.upper()
        return f"--device {target.device}: no {name} is visible to JAX (default backend: {backend}{hint})"
    if target.torch_device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return (
                f"--device gpu: JAX sees {jax.devices()[0].device_kind} but torch {torch.__version__} sees no CUDA "
                "device (HF needs a CUDA build of torch; --jax-only times JAX alone)"
            )
    return None


JAX_ENVIRONMENT = ("JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def jax_environment(environ=os.environ) -> dict:
    """The JAX environment variables in force (set by ``prepare_environment`` or by the user)."""
    return {key: environ[key] for key in JAX_ENVIRONMENT if key in environ}


def describe(target: Target) -> str:
    """What JAX and torch see, in one line (after ``check``)."""
    import jax

    devs = jax.devices()
    out = f"JAX {jax.default_backend()}: {len(devs)} x {devs[0].device_kind}"
    if target.torch_device == "cuda":
        import torch

        out += f"; torch cuda: {torch.cuda.device_count()} x {torch.cuda.get_device_name()}"
    elif target.torch_device == "cpu":
        out += "; torch cpu"
    return out


def configure(target: Target) -> dict:
    """Matmul settings for this target; returns them for the result JSON and the table's header.

    On CUDA torch runs with TF32 off for matmuls and cuDNN (HF's float32 reference; no effect on bfloat16 weights). On
    accelerators in float32 JAX computes exact float32 products too: ``jax_default_matmul_precision="highest"``
    (XLA:GPU would use TF32 and XLA:TPU one bfloat16 pass by default). In bfloat16 and on CPU JAX is left as it is."""
    out: dict = {}
    if target.accelerator and target.exact_float32:
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
        out["jax_default_matmul_precision"] = "highest"
    if target.torch_device == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        out["torch_float32_matmul_precision"] = torch.get_float32_matmul_precision()
        out["torch_cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        out["torch_cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    return out


def numerics_line(target: Target, settings: dict) -> str:
    """The dtype and matmul settings, for the table's header."""
    if not target.accelerator:
        return target.dtype
    parts = []
    if target.torch_device == "cuda":
        tf32 = "on" if settings.get("torch_cuda_matmul_allow_tf32") else "off"
        parts.append(
            f"torch TF32 {tf32} (allow_tf32 = {settings.get('torch_cuda_matmul_allow_tf32')} for matmul and cuDNN)"
        )
    if "jax_default_matmul_precision" in settings:
        parts.append(f"JAX matmul precision {settings['jax_default_matmul_precision']!r}")
    return f"{target.dtype} ({'; '.join(parts)})" if parts else target.dtype


def torch_dtype(target: Target):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[target.dtype]


def jax_dtype(target: Target):
    import jax.numpy as jnp

    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[target.dtype]


def torch_sync(target: Target):
    """A callable that waits for torch's queued device work (a no-op on CPU)."""
    if target.torch_device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None
