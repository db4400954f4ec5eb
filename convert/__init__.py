"""PyTorch (HF transformers) checkpoints -> musicgen-jax parameter trees, strictly and without torch.

``convert_checkpoint(path)`` reads a HF MusicGen Melody or plain MusicGen checkpoint directory (the family by its
``model_type``) and returns ``(config, params)``:
the parameter tree is a nested dict of numpy arrays whose layout the Flax modules define. Each network part has
its own table (``convert/decoder.py``, ...); every HF tensor must be claimed by exactly one part.

``export_tensors(params, config)`` runs the same tables backwards (our tree -> HF tensors, for writing a
transformers checkpoint again; :func:`convert.rules.export`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import numpy as np

from convert.reader import CheckpointError, read_checkpoint
from convert.rules import Rule, convert, export


@dataclasses.dataclass(frozen=True)
class Component:
    """One network part of the composite checkpoint: the HF key prefixes it owns, its table and target shapes."""

    prefixes: tuple[str, ...]
    rules: Callable  # config -> (rules, sizes)
    abstract: Callable  # config -> abstract parameter tree (merged into the model's tree)


def _decoder_component() -> Component:
    from convert.decoder import decoder_rules
    from musicgen_jax import parameters

    return Component(
        ("decoder.", "enc_to_dec_proj.", "audio_enc_to_dec_proj."),
        decoder_rules,
        lambda config: parameters.abstract(config, parts=("decoder", "text_proj", "chroma_proj")),
    )


def _text_encoder_component() -> Component:
    from convert.t5 import t5_rules
    from musicgen_jax import parameters

    return Component(("text_encoder.",), t5_rules, lambda config: parameters.abstract(config, parts=("text_encoder",)))


def _audio_encoder_component() -> Component:
    from convert.encodec import encodec_rules
    from musicgen_jax import parameters

    return Component(
        ("audio_encoder.",),
        lambda config: encodec_rules(config.audio_encoder, prefix="audio_encoder.", root=("audio_encoder",)),
        lambda config: parameters.abstract(config, parts=("audio_encoder",)),
    )


def components() -> dict[str, Component]:
    """The network parts of a MusicGen Melody checkpoint, each with the HF key prefixes it owns."""
    return {
        "text_encoder": _text_encoder_component(),
        "audio_encoder": _audio_encoder_component(),
        "decoder": _decoder_component(),
    }


def convert_tensors(
    tensors: Mapping[str, np.ndarray], config, source: str = "checkpoint", parts: tuple[str, ...] | None = None
) -> dict:
    """HF tensors of a MusicGen Melody checkpoint -> our parameter tree (numpy, source dtype).

    ``parts`` selects network parts by name (default: all). Every tensor must belong to a known part; within a
    selected part every tensor must be mapped and every parameter supplied (see ``convert/rules.py``).
    """
    table = components()
    parts = tuple(table) if parts is None else parts
    owned: dict[str, dict[str, np.ndarray]] = {name: {} for name in table}
    for key in tensors:
        owner = [name for name, comp in table.items() if key.startswith(comp.prefixes)]
        if owner:
            owned[owner[0]][key] = tensors[key]
        else:
            raise CheckpointError(f"{source}: unexpected tensor {key!r} (not part of a {config.model_type} checkpoint)")
    params: dict = {}
    for name in parts:
        comp = table[name]
        rules, sizes = comp.rules(config)
        params.update(convert(owned[name], rules, sizes, comp.abstract(config), source))
    return params


def export_tensors(
    params: Mapping, config, dropped: Mapping[str, np.ndarray] | None = None, source: str = "parameters"
) -> dict[str, np.ndarray]:
    """Our whole parameter tree (the scanned layout, numpy or jax leaves) -> the HF tensors of a transformers
    ``MusicgenMelodyForConditionalGeneration`` / ``MusicgenForConditionalGeneration`` state dict, as its
    ``save_pretrained`` writes them (T5's tied ``encoder.embed_tokens`` left out, as transformers does).

    The tree must have exactly the leaves and shapes of :func:`musicgen_jax.parameters.abstract`, or the error names
    the first that differs. ``dropped``: tensors the converter reads and drops (EnCodec's training buffers), e.g. the
    base HF checkpoint's; those absent get HF's initial values.
    """
    import jax

    from musicgen_jax import parameters

    want = {
        jax.tree_util.keystr(p): s.shape for p, s in jax.tree_util.tree_leaves_with_path(parameters.abstract(config))
    }
    got = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    for key in sorted(set(want) ^ set(got)):
        raise CheckpointError(f"{source}: parameter {key} is {'missing' if key in want else 'unexpected'}")
    for key, shape in want.items():
        if tuple(got[key]) != tuple(shape):
            raise CheckpointError(f"{source}: parameter {key} has shape {tuple(got[key])}, expected {tuple(shape)}")
    tensors: dict[str, np.ndarray] = {}
    for comp in components().values():
        rules, sizes = comp.rules(config)
        for key, value in export(params, rules, sizes, dropped, source).items():
            if key in tensors:
                raise AssertionError(f"two conversion tables write {key!r}")
            tensors[key] = value
    return tensors


def convert_checkpoint(path: str | os.PathLike, parts: tuple[str, ...] | None = None):
    """Reads ``config.json`` and the weights of a HF checkpoint directory; returns ``(config, params)``."""
    from musicgen_jax.config import config_from_pretrained

    config = config_from_pretrained(path)
    tensors = read_checkpoint(path)
    return config, convert_tensors(tensors, config, source=getattr(tensors, "path", os.fspath(path)), parts=parts)


__all__ = [
    "CheckpointError",
    "Component",
    "Rule",
    "convert",
    "convert_checkpoint",
    "convert_tensors",
    "export",
    "export_tensors",
    "read_checkpoint",
]
