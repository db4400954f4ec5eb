"""``musicgen-jax verify``: a self-check of a checkpoint on this machine (CPU, GPU or TPU), as the user runs it.

Two groups of checks, each a :class:`Row` (``PASS``, ``FAIL`` or ``SKIP``) with the observed error:

- float32 parity with HF transformers (run on the CPU in float32, the reference): the T5 states, the conditioning
  (MusicGen Melody: the prefix of text + chroma; plain MusicGen: the projected text states the cross-attention
  reads), one forward pass's logits, ``steps`` greedy codes from ``generate`` (identical, or FAIL) and the audio
  EnCodec makes of them. They need torch and transformers, and an HF checkpoint (``config.json`` +
  safetensors or ``pytorch_model.bin``): a converted directory names its HF original with ``hf=``; otherwise these
  rows are SKIP rows that say why.
- bfloat16 against float32, in JAX: the logits' error relative to their scale (FAIL only above a loose bound or
  when not finite), and the argmax and greedy-code agreement (reported: bfloat16 rounding flips near ties).

Both families are checked, by the checkpoint's ``model_type`` (the header names it); an HF reference of the other
family fails the config row. The inputs are fixed: two prompts through the checkpoint's tokenizer (synthetic token
ids when it has none), one-hot chroma for the melody (MusicGen Melody only), and random decoder codes after BOS for
the forward pass. The comparisons are pure functions (arrays in, rows out); :func:`run` loads the checkpoints and
calls them. torch and transformers are imported only when HF rows are computed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import checkpoint, hub, layers
from musicgen_jax.config import MusicgenConfig, MusicgenMelodyConfig, config_from_pretrained
from musicgen_jax.modeling import ConditionalGeneration, MusicgenMelodyForConditionalGeneration
from musicgen_jax.tokenizer import T5TextTokenizer

AnyConfig = MusicgenMelodyConfig | MusicgenConfig  # either family's config
EXIT_MISMATCH = 1  # a check failed (bad input exits 2, as everywhere in the CLI)
PROMPTS = ("80s pop track with bassy drums and synth", "90s rock song with loud guitars and heavy drums")
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


class VerifyError(ValueError):
    """Bad input to :func:`run` (not a mismatch), reported in one line."""


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """``float32``: relative error (max abs error / max abs reference value) allowed for the T5 states, the prefix,
    the logits and the audio against HF; greedy codes must be identical. ``bfloat16``: relative error allowed for
    bfloat16 logits against float32 ones."""

    float32: float = 1e-4
    bfloat16: float = 5e-2


@dataclasses.dataclass(frozen=True)
class Row:
    """One check: ``status`` is ``"PASS"``, ``"FAIL"`` or ``"SKIP"``; ``measure`` the relative error or agreement as
    printed; ``note`` why it was skipped or where it failed."""

    check: str
    status: str
    max_abs_err: float | None = None
    measure: str = ""
    tolerance: str = ""
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The fixed inputs of every check. ``input_ids`` / ``attention_mask`` int64 ``(B, W)``; ``input_features``
    float32 one-hot chroma ``(B, M, C)`` (None for plain MusicGen); ``decoder_input_ids`` int64 ``(B * K, T)`` (BOS,
    then random codes)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    input_features: np.ndarray | None
    decoder_input_ids: np.ndarray
    source: str  # where the text came from, for the header


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What one framework computed on :class:`Inputs`, as float32 / int numpy: ``states`` T5 ``(B, W, E)``,
    ``prefix`` ``(B, P, D)`` (plain MusicGen: the projected, masked text states ``(B, W, D)``), ``logits``
    ``(B * K, P + T, V)`` (plain: ``P`` is 0), greedy ``codes`` ``(B, K, frames)`` and their
    ``audio`` ``(B, R, samples)``."""

    states: np.ndarray
    prefix: np.ndarray
    logits: np.ndarray
    codes: np.ndarray
    audio: np.ndarray


@dataclasses.dataclass
class Report:
    """The header lines and the rows of one verification; :meth:`table` is what the CLI prints."""

    header: list[str]
    rows: list[Row]
    seconds: float = 0.0

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "FAIL"]

    @property
    def exit_status(self) -> int:
        return EXIT_MISMATCH if self.failed else 0

    def table(self) -> str:
        return format_table(self)


# ----------------------------------------------------------------------------------------------------------------
# Inputs and environment


def make_inputs(config: AnyConfig, tokenizer: T5TextTokenizer | None, frames: int = 8, tgt_len: int = 8):
    """:class:`Inputs` for ``config``: :data:`PROMPTS` through ``tokenizer`` (padded), or, without one, synthetic
    ids in the text vocab with T5's ``</s>`` (1) and right padding in the second row. Fixed seeds throughout."""
    rng = np.random.default_rng(0)
    batch = len(PROMPTS)
    if tokenizer is not None:
        text = tokenizer(list(PROMPTS), padding=True, return_tensors="np")
        ids, mask = np.asarray(text["input_ids"], np.int64), np.asarray(text["attention_mask"], np.int64)
        source = f"{batch} prompts through the checkpoint's tokenizer ({PROMPTS[0]!r}, ...)"
    else:
        length = 9
        ids = rng.integers(2, config.text_encoder.vocab_size, (batch, length))
        mask = np.ones((batch, length), np.int64)
        ids[0, -1], ids[1, -3] = 1, 1  # </s>, then padding (id 0) in the second row
        ids[1, -2:], mask[1, -2:] = 0, 0
        source = f"synthetic token ids ({batch} x {length}; the checkpoint has no tokenizer files)"
    chroma = None
    if config.model_type == "musicgen_melody":
        chroma = np.eye(config.num_chroma, dtype=np.float32)[rng.integers(0, config.num_chroma, (batch, frames))]
        source = f"{source}, {frames} one-hot chroma frames"
    dec = config.decoder
    codes = rng.integers(0, dec.vocab_size, (batch * dec.num_codebooks, tgt_len))
    codes[:, 0] = dec.bos_token_id
    return Inputs(ids, mask, chroma, codes, f"{source}, {tgt_len} decoder positions")


def load_tokenizer(folder: str) -> T5TextTokenizer | None:
    """The checkpoint's tokenizer (the processor's text half) when its files are in ``folder``, else None."""
    if any(os.path.isfile(os.path.join(folder, name)) for name in _TOKENIZER_FILES):
        return T5TextTokenizer.from_pretrained(folder)
    return None


def is_hf_checkpoint(folder: str) -> bool:
    """Whether transformers can read ``folder``: ``config.json`` and weights, and not a converted directory."""
    return (
        not checkpoint.is_converted(folder)
        and os.path.isfile(os.path.join(folder, "config.json"))
        and any(os.path.isfile(os.path.join(folder, name)) for name in _HF_WEIGHTS)
    )


def torch_missing() -> str | None:
    """Why torch / transformers cannot be imported (one line), or None when both can."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return f"{type(e).__name__}: {e}"
    return None


def hf_reference(model_source: str, hf: str | None) -> tuple[str | None, str]:
    """``(folder of the HF checkpoint to compare against, or None; why the HF rows are skipped when None)``.

    ``hf`` (a folder or Hub id) is what the user named; without it, ``model_source`` itself when it is an HF
    checkpoint. A named ``hf`` that cannot serve raises :class:`VerifyError`."""
    if hf is not None:
        folder = hub.resolve(hf, follow=False)
        if checkpoint.is_converted(folder):
            raise VerifyError(f"--hf {hf}: is a converted musicgen-jax checkpoint; name the HF checkpoint it came from")
        if not is_hf_checkpoint(folder):
            raise VerifyError(
                f"--hf {hf}: not an HF checkpoint (config.json and model.safetensors or pytorch_model.bin)"
            )
        missing = torch_missing()
        if missing:
            raise VerifyError(f"--hf {hf}: comparing with HF needs torch and transformers ({missing})")
        return folder, ""
    if checkpoint.is_converted(model_source):
        return None, "a converted musicgen-jax checkpoint, which transformers cannot read: pass --hf PATH"
    if not is_hf_checkpoint(model_source):
        return None, "not an HF checkpoint transformers can read: pass --hf PATH"
    missing = torch_missing()
    if missing:
        return None, f"torch/transformers not importable ({missing})"
    return model_source, ""


def matmul_precision(config: AnyConfig) -> str:
    """The matmul precision T5 and the decoder compute with, per weight dtype (see :mod:`musicgen_jax.layers`)."""
    chosen = config.matmul_precision
    f32, _ = layers.precision_policy(jnp.float32, chosen)
    bf16, _ = layers.precision_policy(jnp.bfloat16, chosen)
    how = f"matmul_precision={chosen!r}" if chosen else "by weight dtype"
    return (
        f"float32 weights {f32.name}, bfloat16 weights {bf16.name} ({how}; "
        f"jax_default_matmul_precision={jax.config.jax_default_matmul_precision})"
    )


def environment() -> list[str]:
    """Header lines: JAX version, backend, device kind and count."""
    device = jax.devices()[0]
    return [f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} x {device.device_kind}"]


# ----------------------------------------------------------------------------------------------------------------
# Running each framework


def jax_outputs(model: ConditionalGeneration, inputs: Inputs, steps: int, guidance_scale: float):
    """:class:`Outputs` of our model (any dtype; results as float32 numpy)."""
    states = model.encode_text(inputs.input_ids, inputs.attention_mask)
    out = model(
        input_ids=inputs.input_ids,
        attention_mask=inputs.attention_mask,
        input_features=inputs.input_features,
        decoder_input_ids=inputs.decoder_input_ids,
    )
    gen = model.generate(
        inputs.input_ids,
        inputs.attention_mask,
        inputs.input_features,
        do_sample=False,
        guidance_scale=guidance_scale,
        max_new_tokens=steps,
        return_dict_in_generate=True,
    )
    f32 = lambda x: np.asarray(jnp.asarray(x, jnp.float32))  # noqa: E731
    return Outputs(
        f32(states), f32(out.encoder_hidden_states), f32(out.logits), np.asarray(gen.audio_codes), f32(gen.sequences)
    )


@contextlib.contextmanager
def _quiet_transformers():
    """transformers warns about generation-config fields greedy search does not use and shows a progress bar while
    loading; the table is the output."""
    from transformers.utils import logging as hf_logging

    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def load_hf(folder: str, model_type: str):
    """transformers' model of the family ``model_type`` names (``MusicgenMelodyForConditionalGeneration`` or
    ``MusicgenForConditionalGeneration``) from ``folder``: float32, eval mode, on the CPU."""
    import torch
    import transformers

    name = {"musicgen_melody": "MusicgenMelodyForConditionalGeneration", "musicgen": "MusicgenForConditionalGeneration"}
    with _quiet_transformers():
        return getattr(transformers, name[model_type]).from_pretrained(folder, dtype=torch.float32).eval()


def _hf_projected_text(hf, states, attention_mask):
    """What plain MusicGen's HF forward hands the decoder's cross-attention (it does not return it): the T5 states
    through ``enc_to_dec_proj`` when HF projects them (the widths differ), then times the attention mask."""
    if (
        hf.text_encoder.config.hidden_size != hf.decoder.config.hidden_size
        and hf.decoder.config.cross_attention_hidden_size is None
    ):
        states = hf.enc_to_dec_proj(states)
    return states * attention_mask[..., None]


def hf_outputs(hf, inputs: Inputs, steps: int, guidance_scale: float) -> Outputs:
    """:class:`Outputs` of the HF model. HF's ``generate`` returns only audio: the codes are the ones it hands to
    ``audio_encoder.decode`` (captured by wrapping it; stereo's left/right codebooks are interleaved back)."""
    import torch

    arrays = {k: v for k, v in dataclasses.asdict(inputs).items() if k != "source" and v is not None}
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    melody = "input_features" in t
    captured = []
    original = hf.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        captured.append(codes[0].clone().numpy())
        return original(codes, *args, **kwargs)

    with torch.no_grad(), _quiet_transformers():
        states = hf.text_encoder(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state
        out = hf(**t)
        prefix = out.encoder_hidden_states if melody else _hf_projected_text(hf, states, t["attention_mask"])
        hf.audio_encoder.decode = spy
        try:
            audio = hf.generate(
                input_ids=t["input_ids"],
                attention_mask=t["attention_mask"],
                **({"input_features": t["input_features"]} if melody else {}),
                do_sample=False,
                guidance_scale=guidance_scale,
                max_new_tokens=steps,
            )
        finally:
            hf.audio_encoder.decode = original
    if len(captured) == 2:  # stereo: HF decodes the even (left) codebooks, then the odd (right) ones
        left, right = captured
        codes = np.stack([left, right], axis=2).reshape(left.shape[0], -1, left.shape[2])
    else:
        codes = captured[0]
    return Outputs(states.numpy(), prefix.numpy(), out.logits.numpy(), np.asarray(codes), audio.numpy())


def as_bfloat16(model: ConditionalGeneration) -> ConditionalGeneration:
    """The same model with bfloat16 weights: ``from_pretrained(dtype=bfloat16)`` casts each float leaf from the file
    the same way (round to nearest even), so casting the float32 tree gives the identical model without a reload."""
    cast = lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
    return type(model)(model.config, jax.tree_util.tree_map(cast, model.params), model.generation_config)


# ----------------------------------------------------------------------------------------------------------------
# Comparisons (pure: arrays in, rows out)


def close_row(check: str, ours, ref, rtol: float) -> Row:
    """PASS when ``max|ours - ref| <= rtol * max|ref|`` and ``ours`` is finite (shapes must match)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    tolerance = f"rel <= {rtol:.1e}"
    if ours.shape != ref.shape:
        return Row(check, "FAIL", tolerance=tolerance, note=f"shape {ours.shape} != reference {ref.shape}")
    if not np.isfinite(ours).all():
        bad = int((~np.isfinite(ours)).sum())
        return Row(check, "FAIL", math.nan, "nan", tolerance, f"{bad} non-finite values")
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = err / max(scale, 1e-30)
    note = f"reference max abs {scale:.3g}"
    return Row(check, "PASS" if rel <= rtol else "FAIL", err, f"{rel:.2e}", tolerance, note)


def codes_row(check: str, ours, ref, min_agreement: float | None = 1.0) -> Row:
    """Greedy codes ``(B, K, frames)``: the fraction that agree. ``min_agreement`` 1.0: identical or FAIL; None:
    reported only."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    tolerance = "identical" if min_agreement == 1.0 else ("report" if min_agreement is None else f">= {min_agreement}")
    if ours.shape != ref.shape:
        return Row(check, "FAIL", tolerance=tolerance, note=f"shape {ours.shape} != reference {ref.shape}")
    same = ours == ref
    agreement = float(same.mean()) if same.size else 1.0
    note = f"{int(same.sum())}/{same.size} codes"
    if not same.all():
        b, k, f = (int(i) for i in np.argwhere(~same)[0])
        note += f"; first differs at batch {b}, codebook {k}, frame {f}"
    ok = min_agreement is None or agreement >= min_agreement
    return Row(check, "PASS" if ok else "FAIL", None, f"agree {agreement:.2%}", tolerance, note)


def conditioning_check(model_type: str) -> str:
    """The name of the conditioning row: the melody prefix, or plain MusicGen's projected text states."""
    return "f32 prefix (T5 + chroma) vs HF" if model_type == "musicgen_melody" else "f32 text states (projected) vs HF"


def compare_hf(
    ours: Outputs, ref: Outputs, steps: int, tol: Tolerances, model_type: str = "musicgen_melody"
) -> list[Row]:
    """float32 rows: our outputs against HF's."""
    rows = [
        close_row("f32 T5 states vs HF", ours.states, ref.states, tol.float32),
        close_row(conditioning_check(model_type), ours.prefix, ref.prefix, tol.float32),
        close_row("f32 logits vs HF", ours.logits, ref.logits, tol.float32),
    ]
    codes = codes_row(f"f32 greedy codes vs HF ({steps} steps)", ours.codes, ref.codes)
    rows.append(codes)
    if codes.status == "PASS":
        rows.append(close_row("f32 audio vs HF", ours.audio, ref.audio, tol.float32))
    else:
        rows.append(Row("f32 audio vs HF", "SKIP", note="the codes differ"))
    return rows


def compare_bfloat16(bf16: Outputs, f32: Outputs, steps: int, tgt_len: int, tol: Tolerances) -> list[Row]:
    """bfloat16 rows: our bfloat16 outputs against our float32 ones. Only the logits' error can fail (or values that
    are not finite); argmax (over the target positions) and code agreement are reported."""
    rows = [close_row("bf16 logits vs f32", bf16.logits, f32.logits, tol.bfloat16)]
    a, b = bf16.logits[:, -tgt_len:].argmax(-1), f32.logits[:, -tgt_len:].argmax(-1)
    same = a == b
    ok = bool(np.isfinite(bf16.logits).all())
    rows.append(
        Row(
            "bf16 logits argmax vs f32",
            "PASS" if ok else "FAIL",
            None,
            f"agree {float(same.mean()):.2%}",
            "report",
            f"{int(same.sum())}/{same.size} target positions",
        )
    )
    rows.append(codes_row(f"bf16 greedy codes vs f32 ({steps} steps)", bf16.codes, f32.codes, None))
    return rows


def config_row(ours: AnyConfig, ref: AnyConfig) -> Row:
    """Whether the HF checkpoint's config is the one we loaded; names the family (``model_type``) or else the first
    field that differs."""
    if ours == ref:
        return Row("config vs HF", "PASS", tolerance="identical")
    if ours.model_type != ref.model_type:
        note = f"model_type: {ours.model_type!r} != {ref.model_type!r} (the HF reference is another MusicGen family)"
        return Row("config vs HF", "FAIL", tolerance="identical", note=note)
    a, b = dataclasses.asdict(ours), dataclasses.asdict(ref)
    for part in a:
        if a[part] != b[part]:
            if isinstance(a[part], dict):
                key = next(k for k in a[part] if a[part][k] != b[part].get(k))
                return Row(
                    "config vs HF",
                    "FAIL",
                    tolerance="identical",
                    note=f"{part}.{key}: {a[part][key]!r} != {b[part][key]!r}",
                )
            return Row("config vs HF", "FAIL", tolerance="identical", note=f"{part}: {a[part]!r} != {b[part]!r}")
    return Row("config vs HF", "FAIL", tolerance="identical")


def skipped_hf_rows(steps: int, reason: str, model_type: str = "musicgen_melody") -> list[Row]:
    """The float32 rows, skipped for ``reason``."""
    checks = ["f32 T5 states vs HF", conditioning_check(model_type), "f32 logits vs HF"]
    checks += [f"f32 greedy codes vs HF ({steps} steps)", "f32 audio vs HF"]
    return [Row(check, "SKIP", note=reason) for check in checks]


def format_table(report: Report) -> str:
    """The header, one line per row, and a summary line."""
    head = ("check", "max abs err", "rel err / agree", "tolerance", "result", "note")
    cells = [
        (
            r.check,
            "-" if r.max_abs_err is None else f"{r.max_abs_err:.2e}",
            r.measure or "-",
            r.tolerance or "-",
            r.status,
            r.note,
        )
        for r in report.rows
    ]
    widths = [max(len(line[i]) for line in [head, *cells]) for i in range(len(head) - 1)]
    fmt = lambda line: "  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]  # noqa: E731
    lines = [*report.header, "", fmt(head).rstrip(), *(fmt(c).rstrip() for c in cells), ""]
    counts = {s: sum(r.status == s for r in report.rows) for s in ("PASS", "FAIL", "SKIP")}
    summary = f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in {report.seconds:.1f} s"
    if report.failed:
        summary = f"FAILED ({', '.join(r.check for r in report.failed)}): {summary}"
    lines.append(summary)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The whole check


def run(
    model: str | os.PathLike,
    hf: str | os.PathLike | None = None,
    steps: int = 16,
    guidance_scale: float | None = None,
    tolerances: Tolerances = Tolerances(),
) -> Report:
    """Loads ``model`` (an HF checkpoint, a converted directory or a Hub id) in float32 and runs every check.

    ``hf``: the HF checkpoint to compare against (default ``model`` itself when HF can read it). ``steps``: greedy
    decoder steps (at least the codebooks per channel, for one audio frame). ``guidance_scale``: default the
    checkpoint's generation config (none: 1.0, no guidance). Raises :class:`VerifyError` (or the loaders' errors) on
    bad input; a mismatch is a FAIL row, not an exception."""
    started = time.perf_counter()
    if not isinstance(steps, int) or steps <= 0:
        raise VerifyError(f"steps must be a positive integer, got {steps!r}")
    ours = MusicgenMelodyForConditionalGeneration.from_pretrained(model, dtype=jnp.float32)  # either family
    family = ours.config.model_type
    dec = ours.config.decoder
    least = dec.num_codebooks // dec.audio_channels
    if steps < least:
        raise VerifyError(f"steps={steps} yields no audio frame: the delay pattern needs at least {least}")
    hf_folder, skip_reason = hf_reference(ours.source_dir, None if hf is None else os.fspath(hf))
    if guidance_scale is None:
        guidance_scale = ours.generation_config.guidance_scale
    guidance_scale = 1.0 if guidance_scale is None else float(guidance_scale)
    if not math.isfinite(guidance_scale):
        raise VerifyError(f"guidance_scale must be a finite number, got {guidance_scale}")
    inputs = make_inputs(ours.config, load_tokenizer(checkpoint.resolve(ours.source_dir)))
    tgt_len = inputs.decoder_input_ids.shape[1]

    header = [
        f"musicgen-jax verify: {model} (model_type {family})",
        *environment(),
        f"matmul precision: {matmul_precision(ours.config)}",
    ]
    header.append(f"inputs: {inputs.source}; {steps} greedy steps, guidance_scale {guidance_scale:g}")
    f32 = jax_outputs(ours, inputs, steps, guidance_scale)
    rows: list[Row] = []
    if hf_folder is None:
        header.append(f"HF reference: skipped ({skip_reason})")
        rows += skipped_hf_rows(steps, skip_reason, family)
    else:
        import torch
        import transformers

        versions = f"transformers {transformers.__version__}, torch {torch.__version__}"
        header.append(f"HF reference: {hf_folder} ({versions}, CPU, float32)")
        config = config_row(ours.config, config_from_pretrained(hf_folder))
        rows.append(config)
        if config.status == "PASS":
            reference = hf_outputs(load_hf(hf_folder, family), inputs, steps, guidance_scale)  # then freed
            rows += compare_hf(f32, reference, steps, tolerances, family)
        else:
            rows += skipped_hf_rows(steps, "the configs differ", family)
    bf16 = jax_outputs(as_bfloat16(ours), inputs, steps, guidance_scale)
    rows += compare_bfloat16(bf16, f32, steps, tgt_len, tolerances)
    return Report(header, rows, time.perf_counter() - started)
