"""Conversion table for the EnCodec codec (HF ``EncodecModel``), under ``audio_encoder.`` or bare (prefix ``""``).

HF builds the SEANet encoder and decoder as flat ``nn.ModuleList``s (``encoder.layers.{i}``) in which ELUs take
indices too; this table walks the config in HF's construction order to give every HF index its place in our
named tree (see ``musicgen_jax/encodec.py`` for the layout).

Weight norm comes in two spellings, both mapped (a checkpoint has one or the other, never both):
  ``conv.weight_g`` / ``conv.weight_v``                                   (``torch.nn.utils.weight_norm``; older files,
                                                                          e.g. facebook/musicgen-melody)
  ``conv.parametrizations.weight.original0`` / ``...original1``         (``torch.nn.utils.parametrizations``;
                                                                          what transformers saves today)
``g`` and ``v`` stay two leaves; the module folds them into the kernel at apply time.
"""

from __future__ import annotations

import numpy as np

from convert.rules import Rule, Transform, linear, reshaped
from musicgen_jax.config import EncodecConfig

# torch Conv1d weight (O, I, Z) -> our kernel (Z, I, O).
CONV_KERNEL = Transform(
    "conv_kernel",
    lambda x, shape: x.transpose(2, 1, 0),
    lambda shape: tuple(reversed(shape)),
    lambda y, shape: y.transpose(2, 1, 0),
)
# torch ConvTranspose1d weight (I, O, Z) -> our kernel (Z, I, O).
CONV_TRANSPOSE_KERNEL = Transform(
    "conv_transpose_kernel",
    lambda x, shape: x.transpose(2, 0, 1),
    lambda shape: (shape[1], shape[2], shape[0]),
    lambda y, shape: y.transpose(1, 2, 0),
)
# torch weight norm magnitude g (channels, 1, 1) -> (channels,).
WEIGHT_NORM_G = reshaped("weight_norm_g", lambda shape: (shape[0], 1, 1))
# torch LSTM bias (4 * O,), gates i, f, g, o -> (G, O).
LSTM_BIAS = reshaped("lstm_bias", lambda shape: (shape[0] * shape[1],))

# Training-only buffers of each codebook (k-means init flag, EMA statistics) are matched, so the table stays strict
# (any other stray key is still an error), and dropped (Rule.drop). Exported again, they are the base checkpoint's when
# known, else HF's initial values (EncodecEuclideanCodebook: inited [1.], cluster_size 0, embed_avg = embed).

_SPELLINGS = (
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
    ("weight_g", "weight_v"),
)


def _conv(rules: list, src: str, dst: tuple, config: EncodecConfig, transposed: bool = False) -> None:
    """Rules for one HF ``EncodecConv1d`` / ``EncodecConvTranspose1d`` at ``src`` (which owns ``.conv``)."""
    kernel = CONV_TRANSPOSE_KERNEL if transposed else CONV_KERNEL
    rules.append(Rule(f"{src}.conv.bias", (*dst, "bias")))
    if config.norm_type == "weight_norm":
        for g_name, v_name in _SPELLINGS:  # the newer spelling first: it is the one a missing-key error names
            rules.append(Rule(f"{src}.conv.{g_name}", (*dst, "g"), WEIGHT_NORM_G))
            rules.append(Rule(f"{src}.conv.{v_name}", (*dst, "v"), kernel))
    else:  # time_group_norm: a plain conv followed by GroupNorm(1, O)
        rules.append(Rule(f"{src}.conv.weight", (*dst, "kernel"), kernel))
        rules.append(Rule(f"{src}.norm.weight", (*dst, "norm", "scale")))
        rules.append(Rule(f"{src}.norm.bias", (*dst, "norm", "bias")))


def _res_block(rules: list, src: str, dst: tuple, config: EncodecConfig) -> None:
    # HF EncodecResnetBlock.block = [ELU, conv, ELU, conv]: the convs are block.1 and block.3.
    _conv(rules, f"{src}.block.1", (*dst, "conv_a"), config)
    _conv(rules, f"{src}.block.3", (*dst, "conv_b"), config)
    if config.use_conv_shortcut:
        _conv(rules, f"{src}.shortcut", (*dst, "shortcut"), config)


def _lstm(rules: list, src: str, dst: tuple) -> None:
    stack = (("lstm_layer", 0),)
    rules += [
        Rule(f"{src}.lstm.weight_ih_l{{lstm_layer}}", (*dst, "w_in"), linear(), stack=stack),
        Rule(f"{src}.lstm.weight_hh_l{{lstm_layer}}", (*dst, "w_rec"), linear(), stack=stack),
        Rule(f"{src}.lstm.bias_ih_l{{lstm_layer}}", (*dst, "b_in"), LSTM_BIAS, stack=stack),
        Rule(f"{src}.lstm.bias_hh_l{{lstm_layer}}", (*dst, "b_rec"), LSTM_BIAS, stack=stack),
    ]


def encodec_rules(
    config: EncodecConfig, prefix: str = "audio_encoder.", root: tuple = ("audio_encoder",)
) -> tuple[list[Rule], dict[str, int]]:
    """Rules for HF ``EncodecModel`` weights under ``prefix``, mapped into our codec tree under ``root``.

    ``prefix=""``, ``root=()`` reads a bare ``encodec`` checkpoint into the codec's own tree.
    """
    rules: list[Rule] = []
    enc, dec = f"{prefix}encoder.layers.", f"{prefix}decoder.layers."
    n_res = config.num_residual_layers

    # Encoder: conv, then per ratio (reversed) [res blocks..., ELU, down conv], then LSTM, ELU, conv.
    _conv(rules, f"{enc}0", (*root, "encoder", "conv_in"), config)
    i = 1
    for s in range(len(config.upsampling_ratios)):
        stage = (*root, "encoder", f"stage_{s}")
        for j in range(n_res):
            _res_block(rules, f"{enc}{i + j}", (*stage, f"res_{j}"), config)
        _conv(rules, f"{enc}{i + n_res + 1}", (*stage, "down"), config)
        i += n_res + 2
    _lstm(rules, f"{enc}{i}", (*root, "encoder", "lstm"))
    _conv(rules, f"{enc}{i + 2}", (*root, "encoder", "conv_out"), config)

    # Decoder: conv, LSTM, then per ratio [ELU, transposed conv, res blocks...], then ELU, conv.
    _conv(rules, f"{dec}0", (*root, "decoder", "conv_in"), config)
    _lstm(rules, f"{dec}1", (*root, "decoder", "lstm"))
    i = 2
    for s in range(len(config.upsampling_ratios)):
        stage = (*root, "decoder", f"stage_{s}")
        _conv(rules, f"{dec}{i + 1}", (*stage, "up"), config, transposed=True)
        for j in range(n_res):
            _res_block(rules, f"{dec}{i + 2 + j}", (*stage, f"res_{j}"), config)
        i += n_res + 2
    _conv(rules, f"{dec}{i + 1}", (*root, "decoder", "conv_out"), config)

    # Quantizer: one codebook per layer, stacked.
    codebook = f"{prefix}quantizer.layers.{{quantizer}}.codebook."
    stack = (("quantizer", 0),)
    rules.append(Rule(codebook + "embed", (*root, "quantizer", "codebooks"), stack=stack))
    codebooks = (*root, "quantizer", "codebooks")  # (Q, codebook_size, codebook_dim)
    fills = {
        "inited": lambda get, index: np.ones((1,), get(codebooks).dtype),
        "cluster_size": lambda get, index: np.zeros(get(codebooks).shape[1:2], get(codebooks).dtype),
        "embed_avg": lambda get, index: get(codebooks)[index["quantizer"]],
    }
    for buffer, fill in fills.items():
        rules.append(Rule(codebook + buffer, ("dropped",), stack=stack, drop=True, fill=fill))

    sizes = {"lstm_layer": config.num_lstm_layers, "quantizer": config.num_quantizers}
    return rules, sizes
