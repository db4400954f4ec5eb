"""Conversion table for the T5 text encoder (HF ``T5EncoderModel`` weights under ``text_encoder.``)."""

from __future__ import annotations

from convert.rules import Rule, linear
from musicgen_jax.config import MusicgenMelodyConfig

_STACK = "text_encoder.encoder."
_ATTN = _STACK + "block.{layer}.layer.0."  # T5LayerSelfAttention
_FF = _STACK + "block.{layer}.layer.1."  # T5LayerFF (an encoder block has no cross-attention in between)
_LAYERS = (("layer", 0),)


def t5_rules(config: MusicgenMelodyConfig) -> tuple[list[Rule], dict[str, int]]:
    """Rules for HF ``T5EncoderModel`` weights under ``text_encoder.``, mapped into our ``text_encoder`` tree."""
    t = ("text_encoder",)
    rules = [
        # HF ties `encoder.embed_tokens` to `shared`; a checkpoint may store either spelling or both (then equal).
        Rule("text_encoder.shared.weight", (*t, "embed")),
        Rule(_STACK + "embed_tokens.weight", (*t, "embed"), tied=True),
        # Only block 0 owns the relative position bias (T5Stack builds `has_relative_attention_bias=(i == 0)`).
        Rule(_STACK + "block.0.layer.0.SelfAttention.relative_attention_bias.weight", (*t, "rel_bias")),
        Rule(_STACK + "final_layer_norm.weight", (*t, "final_norm", "scale")),
        Rule(_ATTN + "layer_norm.weight", (*t, "layers", "attn_norm", "scale"), stack=_LAYERS),
        Rule(_ATTN + "SelfAttention.o.weight", (*t, "layers", "attn", "out"), linear(n_in=2), stack=_LAYERS),
        Rule(_FF + "layer_norm.weight", (*t, "layers", "mlp_norm", "scale"), stack=_LAYERS),
        Rule(_FF + "DenseReluDense.wo.weight", (*t, "layers", "mlp", "down"), linear(), stack=_LAYERS),
    ]
    # q, k and v fill one fused kernel (E, 3, N, H); the qkv index is stacked at axis 1 of each layer's piece.
    for slot, name in enumerate("qkv"):
        rules.append(
            Rule(
                _ATTN + f"SelfAttention.{name}.weight",
                (*t, "layers", "attn", "qkv"),
                linear(),
                stack=(("layer", 0), ("qkv", 1)),
                fixed=(("qkv", slot),),
            )
        )
    if config.text_encoder.is_gated_act:
        ffn_in = (("wi_0", "gate"), ("wi_1", "up"))  # act(wi_0 x) * (wi_1 x)
    else:
        ffn_in = (("wi", "up"),)
    for hf_name, ours in ffn_in:
        rules.append(
            Rule(_FF + f"DenseReluDense.{hf_name}.weight", (*t, "layers", "mlp", ours), linear(), stack=_LAYERS)
        )
    sizes = {"layer": config.text_encoder.num_layers, "qkv": 3}
    return rules, sizes
