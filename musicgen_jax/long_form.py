"""Long-form generation: music longer than one window, as audiocraft makes it (``MusicGen._generate_tokens``).

The rule, in frames (``fr`` frames per second; window ``W``, stride ``S``, piece ``N`` frames, prompt included):

- window 0 holds ``min(N, W)`` frames: the audio prompt, if any, then new frames;
- while ``offset + prompt < N``: the next window continues the last ``W - S`` frames of the one before
  (``offset += S``) and holds ``min(N - offset, W)`` frames, of which the new ones are appended to the piece.

audiocraft computes the window lengths in floating point (``int(min(duration - offset / fr, max_duration) * fr)``);
we count whole frames, which gives the same lengths without the rounding of ``int`` on products such as
``0.0035 * 8000 = 27.999...``. Text conditions are the same for every window; a melody is read again for each
(:func:`musicgen_jax.melody.window_waves`).

Each window is HF's ``generate`` continuing ``decoder_input_ids`` = its prompt frames. The programs are compiled for
the full window's buffer: the first window and the steady ones differ only in the prefill's prompt length, and the
last, shorter window runs the steady programs and stops early, so any duration runs the same small set of programs
(:func:`musicgen_jax.sampling.run_loop`'s ``stop``; a step program per phase of the KV cache,
:func:`musicgen_jax.sampling.phase_ends`, for the first window's and the steady windows' prompt lengths). The KV
cache and code buffer are sized by the window.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from musicgen_jax import generation, sampling

DEFAULT_WINDOW_SECONDS = 30.0  # audiocraft's max_duration: what MusicGen was trained on
DEFAULT_STRIDE_SECONDS = 18.0  # audiocraft's extend_stride default
DEFAULT_STRIDE_FRACTION = DEFAULT_STRIDE_SECONDS / DEFAULT_WINDOW_SECONDS  # the stride for another window length
MAX_DURATION_SECONDS = 3600.0  # one hour: past that a request is almost surely a unit mistake


@dataclasses.dataclass(frozen=True)
class Window:
    """One window of a long piece, in frames of the piece."""

    index: int
    offset: int  # the piece's frame where the window starts
    frames: int  # frames the window holds, its prompt included
    prompt: int  # frames it continues: the previous window's last W - S (or, in window 0, the audio prompt)

    @property
    def new_frames(self) -> int:
        return self.frames - self.prompt


@dataclasses.dataclass(frozen=True)
class Plan:
    """The windows of one piece: ``total`` frames in windows of ``window`` frames every ``stride`` frames."""

    total: int
    window: int
    stride: int
    windows: tuple[Window, ...]

    def steps(self, channel_codebooks: int) -> list[int]:
        """Decoder steps per window: its new frames plus the delay pattern's ``channel_codebooks - 1``."""
        return [w.new_frames + channel_codebooks - 1 for w in self.windows]


def frames_of(seconds: float, frame_rate: int) -> int:
    """Whole frames in ``seconds`` (rounded down; ``1e-6`` absorbs products such as ``0.0035 * 8000``)."""
    return math.floor(seconds * frame_rate + 1e-6)


def plan_windows(total: int, window: int, stride: int, prompt: int = 0) -> Plan:
    """The windows of a piece of ``total`` frames (the ``prompt`` frames included), audiocraft's rule (module doc)."""
    if not 0 < stride < window:
        raise ValueError(f"the stride ({stride} frames) must be positive and shorter than the window ({window})")
    windows, offset, continued = [], 0, prompt
    while offset + continued < total or not windows:
        frames = min(total - offset, window)
        windows.append(Window(len(windows), offset, frames, continued))
        continued, offset = frames - stride, offset + stride
    return Plan(total, window, stride, tuple(windows))


def plan(
    duration: float,
    window_duration: float | None,
    extend_stride: float | None,
    prompt_frames: int,
    frame_rate: int,
) -> Plan | None:
    """The windows ``generate(duration=..., window_duration=..., extend_stride=...)`` runs, or None when one window
    holds the piece (the prompt's frames and ``duration`` seconds of new audio): then generation is one-shot, as
    HF's. Bad values raise a one-line ValueError naming the argument.

    ``extend_stride`` defaults to 18 s (audiocraft's) for the default 30 s window, else to the same fraction (0.6)
    of ``window_duration``.
    """
    window_seconds = DEFAULT_WINDOW_SECONDS if window_duration is None else window_duration
    window_seconds = generation.check_duration(window_seconds, "window_duration")
    if extend_stride is None:
        stride_seconds = DEFAULT_STRIDE_SECONDS if window_duration is None else DEFAULT_STRIDE_FRACTION * window_seconds
    else:
        stride_seconds = check_stride(extend_stride, window_seconds)
    if duration > MAX_DURATION_SECONDS:
        raise ValueError(
            f"duration {duration:g} s is past the cap of {MAX_DURATION_SECONDS:g} s (one hour) of audio per call; "
            "generate longer pieces in parts with an audio prompt"
        )
    window = frames_of(window_seconds, frame_rate)
    stride = frames_of(stride_seconds, frame_rate)
    total = prompt_frames + generation.frames_for(duration, frame_rate)
    if total <= window:
        return None
    if window < 2:
        raise ValueError(f"window_duration {window_seconds:g} s holds {window} frame(s) at {frame_rate} Hz; give more")
    if not 0 < stride < window:
        raise ValueError(
            f"extend_stride {stride_seconds:g} s is {stride} frames at {frame_rate} Hz: it must be at least one frame "
            f"and shorter than the window ({window} frames)"
        )
    if prompt_frames >= window:
        raise ValueError(
            f"the audio prompt ({prompt_frames / frame_rate:g} s, {prompt_frames} frames) must be shorter than "
            f"window_duration ({window_seconds:g} s): each window holds its prompt"
        )
    return plan_windows(total, window, stride, prompt_frames)


def check_stride(extend_stride, window_seconds: float) -> float:
    """``extend_stride`` as seconds in (0, window_duration); a one-line ValueError otherwise."""
    stride = generation.check_duration(extend_stride, "extend_stride")
    if stride >= window_seconds:
        raise ValueError(
            f"extend_stride {stride:g} s must be shorter than window_duration {window_seconds:g} s (each window "
            "continues the last window_duration - extend_stride seconds of the one before)"
        )
    return stride


def window_error(config, prefix_len: int, window: int, window_seconds: float, default: bool = False) -> str | None:
    """The message when the position table cannot hold the conditioning prefix and a whole window, else None
    (``default``: the window is the default one, not asked for)."""
    dec = config.decoder
    channel_codebooks = dec.num_codebooks // dec.audio_channels
    positions = dec.max_position_embeddings
    need = prefix_len + window + channel_codebooks  # the start token, W frames and the pattern's delays
    if need <= positions:
        return None
    frame_rate = config.audio_encoder.frame_rate
    room = positions - prefix_len - channel_codebooks
    what = f"a conditioning prefix of {prefix_len} positions and " if prefix_len else ""
    fits = (
        f"at most {generation.seconds_at_most(room, frame_rate)} s fits"
        if room > 0
        else "no window fits: shorten the text prompt"
    )
    which = "the default window_duration" if default else "window_duration"
    return (
        f"{which} {window_seconds:g} s does not fit: the decoder's position table (max_position_embeddings "
        f"{positions}) must hold {what}a window of {window} frames plus {channel_codebooks} positions of start "
        f"token and delays; {fits}"
    )


def run(
    decoder_params,
    plan: Plan,
    conditions_for,
    prompt: np.ndarray,
    knobs: generation.Knobs,
    rng,
    decoder_config,
    *,
    progress=None,
    rules=None,
    on_codes=None,
) -> tuple[np.ndarray, dict]:
    """The windows of ``plan``, each a :func:`musicgen_jax.generation.run_loop` over the full window's buffer.

    Args:
      conditions_for: ``window -> Conditions`` (text: the same for every window; melody: that window's chroma).
      prompt: window 0's decoder prompt ``(B * K, 1 + p)``: BOS and the audio prompt's ``p`` frames.
      rng: the key, or one per row (:func:`musicgen_jax.sampling.row_keys`); window ``i`` samples with
        ``fold_in(rng, i)`` (of each row's key).
      progress: ``callback(done, total)`` over the whole piece's decoder steps.
      on_codes: ``callback(codes (B, K, n))`` with each window's new frames (window 0: its prompt too), as soon as
        the window is done: the streamed codec decode reads them.

    Returns ``(codes (B, K, N), timings)``, the timings summed over the windows.
    """
    dec = decoder_config
    K = dec.num_codebooks
    channel_codebooks = K // dec.audio_channels
    batch = prompt.shape[0] // K
    capacity = plan.window + channel_codebooks
    steps = plan.steps(channel_codebooks)
    all_steps, before = sum(steps), 0
    pieces: list[np.ndarray] = [prompt.reshape(batch, K, -1)[:, :, 1:].astype(np.int64)]  # the audio prompt's frames
    timings: dict = {}
    for window, window_steps in zip(plan.windows, steps, strict=True):
        if window.index == 0:
            window_prompt = prompt
        else:
            codes = np.concatenate(pieces, axis=2)
            tail = codes[:, :, window.offset : window.offset + window.prompt].reshape(batch * K, window.prompt)
            window_prompt = np.concatenate([np.full((batch * K, 1), knobs.bos_token_id, np.int64), tail], axis=1)
        report = None
        if progress is not None:
            report = lambda done, _, start=before: progress(start + done, all_steps)  # noqa: E731
        codes_window, loop = generation.run_loop(
            decoder_params,
            conditions_for(window),
            window_prompt,
            window.frames + channel_codebooks,
            knobs,
            sampling.fold_in(rng, window.index),
            dec,
            report,
            rules=rules,
            capacity=capacity,
        )
        for name, seconds in loop.items():
            timings[name] = timings.get(name, 0.0) + seconds
        new = codes_window[:, :, window.prompt :]
        pieces.append(new)
        if on_codes is not None:
            on_codes(new if window.index else np.concatenate([pieces[0], new], axis=2))
        before += window_steps
    return np.concatenate(pieces, axis=2), timings
