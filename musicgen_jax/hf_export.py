"""Writing a transformers checkpoint again: our parameter tree -> HF safetensors + ``config.json`` /
``generation_config.json`` (+ tokenizer and preprocessor files), a folder transformers'
``MusicgenMelodyForConditionalGeneration.from_pretrained`` / ``MusicgenForConditionalGeneration.from_pretrained``
loads without missing or unexpected keys.

The tensors come from the converter's own tables run backwards (:func:`convert.export_tensors`), so the mapping is
the strict inverse of the one that loaded them: a HF checkpoint converted and exported gives its tensors back bit for
bit. numpy and ``safetensors.numpy`` only: no torch.

Layout of an export (a plain HF folder)::

    model.safetensors        every tensor of HF's state dict (T5's tied ``encoder.embed_tokens`` left out, as HF)
    config.json              the HF config, with ``architectures``
    generation_config.json
    tokenizer / preprocessor files, copied from the base model's folder when it has them
    musicgen_jax_export.json our marker (what was exported from where); transformers ignores it

The write is atomic: everything goes into a temporary folder beside the destination, which is renamed onto it at the
end. A destination must be new, empty, or an earlier export (the marker says so); an earlier export is moved aside
first and removed once the new one is in place, so a kill in between leaves it under a hidden name
(``.NAME.export-*.old``) that the next export removes.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from musicgen_jax import checkpoint, files

MARKER = "musicgen_jax_export.json"
FORMAT = "musicgen-jax-export"
_ARCHITECTURES = {
    "musicgen_melody": "MusicgenMelodyForConditionalGeneration",
    "musicgen": "MusicgenForConditionalGeneration",
}
# The side files an export copies from the base model (the generation config is written from ours).
SIDE_FILES = tuple(name for name in checkpoint.SIDE_FILES if name != "generation_config.json")


class ExportError(checkpoint.CheckpointError):
    """A destination or source an export cannot use; the message names it."""


def check_destination(dst: str | os.PathLike) -> None:
    """Refuses a destination an export must not replace: a file, or a non-empty folder that is not an export."""
    dst = os.fspath(dst)
    if not os.path.exists(dst):
        if not os.path.isdir(os.path.dirname(os.path.abspath(dst))):
            raise ExportError(f"{dst}: its parent folder does not exist")
        return
    if not os.path.isdir(dst):
        raise ExportError(f"{dst}: exists and is not a directory")
    if os.listdir(dst) and not files.has_marker(dst, MARKER, FORMAT):
        raise ExportError(
            f"{dst}: not empty and not a musicgen-jax export ({len(os.listdir(dst))} entries); choose a new or "
            "empty folder (an earlier export there is replaced)"
        )


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def hf_config(config) -> dict:
    """The HF ``config.json`` of ``config`` (either family), naming the transformers class that loads it."""
    return {"architectures": [_ARCHITECTURES[config.model_type]], **config.to_hf()}


def dropped_tensors(source: str | None):
    """The base HF checkpoint's tensors (lazily read) whose values our tree does not keep (EnCodec's training
    buffers), or None when ``source`` is not a HF checkpoint with weights (a converted folder, say)."""
    if source is None or checkpoint.is_converted(source):
        return None
    from convert.reader import CheckpointError, read_checkpoint

    try:
        return read_checkpoint(source)
    except CheckpointError:
        return None


def save(
    dst: str | os.PathLike,
    params: dict,
    config,
    generation_config=None,
    copy_from: str | os.PathLike | None = None,
    note: dict | None = None,
) -> str:
    """Writes ``params`` (our whole tree, scanned layout; numpy or jax leaves, their dtype kept) as a HF checkpoint
    folder ``dst`` (see the module docstring); returns its absolute path.

    ``copy_from``: the base model's folder (HF or converted): its tokenizer/preprocessor files are copied and, for a
    HF folder, its EnCodec training buffers (which our tree does not keep) are written back unchanged. ``note``: extra
    JSON for the marker (e.g. the training checkpoint and step). Raises :class:`ExportError` for a destination it
    must not replace, before anything is written.
    """
    from safetensors.numpy import save_file

    from convert import export_tensors

    dst = os.path.abspath(os.fspath(dst))
    check_destination(dst)
    source = None if copy_from is None else os.path.abspath(checkpoint.resolve(os.fspath(copy_from)))
    tensors = export_tensors(_numpy(params), config, dropped=dropped_tensors(source))

    for leftover in files.folder_leftovers(dst, "export"):  # a killed export's: ours by marker (or still empty)
        if files.has_marker(leftover, MARKER, FORMAT) or not os.listdir(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
    with files.atomic_folder(dst, "export") as temporary:
        marker = {"format": FORMAT, "version": 1, "model_type": config.model_type, **(note or {})}
        _write_json(os.path.join(temporary, MARKER), marker)  # first: a leftover is recognised by it
        save_file(tensors, os.path.join(temporary, "model.safetensors"), metadata={"format": "pt"})
        _write_json(os.path.join(temporary, "config.json"), hf_config(config))
        if generation_config is not None:
            _write_json(os.path.join(temporary, "generation_config.json"), generation_config.to_hf())
        if source is not None:
            for side in SIDE_FILES:
                if os.path.isfile(os.path.join(source, side)):
                    shutil.copyfile(os.path.join(source, side), os.path.join(temporary, side))
    return dst


def _numpy(params):
    import jax

    return jax.tree_util.tree_map(np.asarray, params)
