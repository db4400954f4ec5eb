"""Conversion table for the MusicGen decoder (``decoder.*``) and the conditioning projections, for both families:
MusicGen Melody (a prefix; ``audio_enc_to_dec_proj`` for chroma) and plain MusicGen (cross-attention to the text
states in every layer, HF ``encoder_attn``)."""

from __future__ import annotations

from convert.rules import Rule, linear, torch_linear
from musicgen_jax.config import MusicgenConfig, MusicgenMelodyConfig

_LAYER = "decoder.model.decoder.layers.{layer}."
_LAYERS = (("layer", 0),)


def decoder_rules(config: MusicgenMelodyConfig | MusicgenConfig) -> tuple[list[Rule], dict[str, int]]:
    """Rules for HF ``MusicgenMelodyForCausalLM`` / ``MusicgenForCausalLM`` weights under ``decoder.``, mapped into
    our ``decoder`` tree, and the projections."""
    d = ("decoder",)
    rules = [
        Rule("decoder.model.decoder.embed_tokens.{codebook}.weight", (*d, "embed"), stack=(("codebook", 0),)),
        Rule("decoder.lm_heads.{codebook}.weight", (*d, "lm_heads"), linear(), stack=(("codebook", 0),)),
        Rule("decoder.model.decoder.layer_norm.weight", (*d, "final_norm", "scale")),
        Rule("decoder.model.decoder.layer_norm.bias", (*d, "final_norm", "bias")),
        Rule(_LAYER + "self_attn_layer_norm.weight", (*d, "layers", "attn_norm", "scale"), stack=_LAYERS),
        Rule(_LAYER + "self_attn_layer_norm.bias", (*d, "layers", "attn_norm", "bias"), stack=_LAYERS),
        Rule(_LAYER + "final_layer_norm.weight", (*d, "layers", "mlp_norm", "scale"), stack=_LAYERS),
        Rule(_LAYER + "final_layer_norm.bias", (*d, "layers", "mlp_norm", "bias"), stack=_LAYERS),
        # the layers' kernels stay in torch's (out, in) order (musicgen_jax/decoder.py): reshaped, never transposed
        Rule(_LAYER + "self_attn.out_proj.weight", (*d, "layers", "attn", "out"), torch_linear(), stack=_LAYERS),
        Rule(_LAYER + "fc1.weight", (*d, "layers", "mlp", "up"), torch_linear(), stack=_LAYERS),
        Rule(_LAYER + "fc2.weight", (*d, "layers", "mlp", "down"), torch_linear(), stack=_LAYERS),
    ]
    # q, k and v fill one fused kernel (3, N, H, D); the qkv index is the first axis of each layer's piece.
    for slot, name in enumerate(("q_proj", "k_proj", "v_proj")):
        rules.append(
            Rule(
                _LAYER + f"self_attn.{name}.weight",
                (*d, "layers", "attn", "qkv"),
                torch_linear(2),
                stack=(("layer", 0), ("qkv", 0)),
                fixed=(("qkv", slot),),
            )
        )
    if config.decoder.cross_attention:
        rules += [
            Rule(_LAYER + "encoder_attn_layer_norm.weight", (*d, "layers", "cross_norm", "scale"), stack=_LAYERS),
            Rule(_LAYER + "encoder_attn_layer_norm.bias", (*d, "layers", "cross_norm", "bias"), stack=_LAYERS),
            Rule(
                _LAYER + "encoder_attn.q_proj.weight", (*d, "layers", "cross_attn", "q"), torch_linear(2), stack=_LAYERS
            ),
            Rule(
                _LAYER + "encoder_attn.out_proj.weight",
                (*d, "layers", "cross_attn", "out"),
                torch_linear(),
                stack=_LAYERS,
            ),
        ]
        # k and v fill one fused kernel (2, N, H, D), as q, k, v do for self-attention
        for slot, name in enumerate(("k_proj", "v_proj")):
            rules.append(
                Rule(
                    _LAYER + f"encoder_attn.{name}.weight",
                    (*d, "layers", "cross_attn", "kv"),
                    torch_linear(2),
                    stack=(("layer", 0), ("kv", 0)),
                    fixed=(("kv", slot),),
                )
            )
    if config.has_text_projection:
        rules += [
            Rule("enc_to_dec_proj.weight", ("text_proj", "kernel"), linear()),
            Rule("enc_to_dec_proj.bias", ("text_proj", "bias")),
        ]
    if config.has_chroma_projection:
        rules += [
            Rule("audio_enc_to_dec_proj.weight", ("chroma_proj", "kernel"), linear()),
            Rule("audio_enc_to_dec_proj.bias", ("chroma_proj", "bias")),
        ]
    sizes = {"layer": config.decoder.num_hidden_layers, "codebook": config.decoder.num_codebooks, "qkv": 3, "kv": 2}
    return rules, sizes
