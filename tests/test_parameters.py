"""Each parameter is declared once: its shape and dtype by its Flax module, its logical axes and its initialiser in
``musicgen_jax.parameters``; the abstract tree, random values, shardings and the converter's expectations all derive
from there. Every leaf of both decoder layouts must have all three."""

import dataclasses

import numpy as np
import pytest

from musicgen_jax import decoder, parameters, sharding
from musicgen_jax.config import MusicgenConfig
from musicgen_jax.demo import tiny_config


def _configs():
    tiny = tiny_config()
    # T5 width != decoder width and 12 chroma bins != decoder width: both projections exist.
    wide = dataclasses.replace(tiny, decoder=dataclasses.replace(tiny.decoder, hidden_size=48, num_attention_heads=4))
    stereo = dataclasses.replace(tiny, decoder=dataclasses.replace(tiny.decoder, num_codebooks=8, audio_channels=2))
    plain = MusicgenConfig(text_encoder=tiny.text_encoder, audio_encoder=tiny.audio_encoder, decoder=wide.decoder)
    return {"tiny": tiny, "projections": wide, "stereo": stereo, "plain": plain}


def _paths(tree):
    import jax

    return {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("name", ["tiny", "projections", "stereo", "plain"])
@pytest.mark.parametrize("layout", ["scanned", "unrolled"])
def test_every_parameter_has_logical_axes_and_an_initialiser(name, layout):
    config = _configs()[name]
    values = parameters.random(config, seed=0)
    if layout == "unrolled":
        values["decoder"] = decoder.unstack_layers(values["decoder"])
    leaves = _paths(values)
    assert ("text_proj/kernel" in leaves) == (name in ("projections", "plain"))
    assert ("chroma_proj/kernel" in leaves) == (name != "plain")  # 12 chroma bins != every decoder width here
    assert any("cross_attn/kv" in path for path in leaves) == (name == "plain")
    for path, value in leaves.items():
        axes = parameters.logical_axes(path, value.ndim)  # raises for a parameter nobody declared
        assert len(axes) == value.ndim and np.all(np.isfinite(value)), path
    # The converter, the loader and the random values see one tree.
    abstract = _paths(parameters.abstract(config))
    scanned = _paths(parameters.random(config, seed=1))
    assert abstract.keys() == scanned.keys()
    assert all(abstract[k].shape == scanned[k].shape for k in abstract)


def test_sharding_reads_the_same_declarations():
    assert sharding.logical_axes is parameters.logical_axes
    assert parameters.logical_axes("decoder/layers_3/mlp/up", 2) == ("ffn", "embed")  # (out, in)
