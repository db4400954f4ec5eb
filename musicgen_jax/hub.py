"""Where checkpoints come from: a local directory, or a Hugging Face Hub id downloaded with ``huggingface_hub``."""

from __future__ import annotations

import os

# What musicgen-jax reads from a checkpoint; nothing else is downloaded (no .bin, no flax/tf weights).
ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "preprocessor_config.json",
    "processor_config.json",
]


class HubError(OSError):
    """A model name that is neither a local directory nor reachable on the Hub."""


def resolve(name_or_path: str | os.PathLike, follow: bool = True) -> str:
    """A local directory for ``name_or_path``: the path itself, or a Hub snapshot (only the files we read).

    ``follow``: for a converted directory, the folder of its current version (where its files are; see
    :mod:`musicgen_jax.checkpoint`) rather than the directory itself.

    Raises :class:`HubError` with a one-line message when the name is not a directory and the Hub cannot give it.
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        if follow:
            from musicgen_jax import checkpoint

            return checkpoint.resolve(path)
        return path
    if os.path.exists(path):
        raise HubError(f"{path}: expected a checkpoint directory, got a file")
    parts = path.split("/")
    if path.startswith((".", "/", "~")) or len(parts) > 2 or not all(parts):
        raise HubError(f"{path}: no such checkpoint directory")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=path, allow_patterns=ALLOW_PATTERNS)
    except Exception as e:  # offline, unknown repo, gated repo, ...: one line that says what to do
        from musicgen_jax.errors import one_line

        reason = one_line(e)
        raise HubError(
            f"{path}: not a local directory, and the Hugging Face Hub could not provide it ({type(e).__name__}: "
            f"{reason[:160]}); download the checkpoint on a connected machine and pass its local path"
        ) from None
