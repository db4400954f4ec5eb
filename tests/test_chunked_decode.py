"""The chunked streaming decoder: the window plan (exact, with a fake codec), pushes of any size, argument checks, and
a tiny random EnCodec: chunked vs one-shot SNR, one-shot equality for short inputs, one compiled program for every
length."""

import numpy as np
import pytest
from jax import monitoring

from musicgen_jax.chunked_decode import (
    CHUNK_SECONDS,
    OVERLAP_SECONDS,
    StreamingDecoder,
    decode_chunked,
    frames_for,
    plan_windows,
)
from tests.helpers import TINY_ENCODEC

SPF = 3  # samples per frame of the fake codec


class FakeCodec:
    """decode: each frame becomes SPF samples equal to its codebook-0 code (channel 1: minus it); records the codes of
    every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, codes_BKY):
        self.calls.append(np.array(codes_BKY))
        first_BY = codes_BKY[:, 0, :].astype(np.float32)
        return np.repeat(np.stack([first_BY, -first_BY], axis=1), SPF, axis=2)


def frame_codes(B=2, K=3, N=50):
    """codes (B, K, N) whose codebook-0 value is the frame index plus 1000 b: the fake audio says which frame it is."""
    codes_B1Y = np.arange(N)[None, None, :] + 1000 * np.arange(B)[:, None, None]
    return np.ascontiguousarray(np.broadcast_to(codes_B1Y, (B, K, N)), dtype=np.int32)


def expected_audio(codes_BKY):
    return FakeCodec()(codes_BKY)


@pytest.mark.parametrize("N, C, O", [(50, 10, 4), (34, 10, 4), (19, 10, 4), (18, 10, 4), (7, 10, 4), (23, 5, 0)])
def test_plan_tiles_every_frame_once_with_full_windows(N, C, O):
    L = C + 2 * O
    windows = plan_windows(N, C, O)
    emitted = np.concatenate([np.arange(w.emit_start, w.emit_stop) for w in windows])
    np.testing.assert_array_equal(emitted, np.arange(N))
    for w in windows:
        assert w.stop - w.start == min(L, N)
        assert w.start <= w.emit_start < w.emit_stop <= w.stop
        # context: O frames either side, except at the true ends of the audio
        assert w.emit_start - w.start >= O or w.start == 0
        assert w.stop - w.emit_stop >= O or w.stop == N
    if N > L:
        assert windows[0].emit_stop == L - O and all(w.emit_stop - w.emit_start == C for w in windows[1:-1])


@pytest.mark.parametrize("N, C, O", [(50, 10, 4), (18, 10, 4), (7, 10, 4), (23, 5, 0), (61, 1, 2)])
def test_fake_codec_output_is_exact(N, C, O):
    codes = frame_codes(N=N)
    fake = FakeCodec()
    audio = decode_chunked(fake, codes, SPF, C, O)
    assert audio.dtype == np.float32 and audio.shape == (2, 2, N * SPF)
    np.testing.assert_array_equal(audio, expected_audio(codes))
    assert {c.shape[2] for c in fake.calls} == {min(C + 2 * O, N)}


def test_irregular_pushes_match_one_push_and_decode_as_soon_as_ready():
    N, C, O = 83, 10, 4
    codes = frame_codes(N=N)
    whole = FakeCodec()
    reference = decode_chunked(whole, codes, SPF, C, O)
    rng = np.random.default_rng(0)
    fake = FakeCodec()
    decoder = StreamingDecoder(fake, N, SPF, C, O)
    pieces, ready_at, push_ends, most_buffered = [], [], [], 0
    while decoder.frames_pushed < N:
        start = decoder.frames_pushed
        new = decoder.push(codes[:, :, start : start + int(rng.choice([0, 1, 2, 7, 13, 25]))])
        push_ends.append(decoder.frames_pushed)
        ready_at += [decoder.frames_pushed] * len(new)
        pieces += new
        most_buffered = max(most_buffered, decoder.buffered_frames)
    pieces += decoder.finish()
    np.testing.assert_array_equal(np.concatenate(pieces, axis=2), reference)
    assert len(fake.calls) == len(whole.calls) and all(map(np.array_equal, fake.calls, whole.calls))
    windows = plan_windows(N, C, O)
    # each window is decoded by the first push that completes it
    assert ready_at == [min(end for end in push_ends if end >= w.stop) for w in windows]
    assert most_buffered < C + 2 * O + 25  # only the frames still needed stay buffered
    assert decoder.buffered_frames == 0


def test_one_frame_at_a_time():
    N, C, O = 40, 6, 3
    codes = frame_codes(B=1, K=1, N=N)
    decoder = StreamingDecoder(FakeCodec(), N, SPF, C, O)
    stops = [w.stop for w in plan_windows(N, C, O)]
    pieces = []
    for y in range(N):
        new = decoder.push(codes[:, :, y : y + 1])
        assert len(new) == (y + 1 in stops)
        pieces += new
    assert decoder.finish() == []
    np.testing.assert_array_equal(np.concatenate(pieces, axis=2), expected_audio(codes))


def test_argument_errors():
    fake = FakeCodec()
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        StreamingDecoder(fake, 10, SPF, 0, 1)
    with pytest.raises(ValueError, match="overlap_frames must be >= 0"):
        StreamingDecoder(fake, 10, SPF, 4, -1)
    with pytest.raises(ValueError, match="total_frames must be >= 1"):
        StreamingDecoder(fake, 0, SPF, 4, 1)
    with pytest.raises(ValueError, match="samples_per_frame must be >= 1"):
        StreamingDecoder(fake, 10, 0, 4, 1)
    decoder = StreamingDecoder(fake, 10, SPF, 4, 1)
    with pytest.raises(ValueError, match=r"shape \(batch, codebooks, frames\)"):
        decoder.push(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="must be integers"):
        decoder.push(np.zeros((2, 3, 1), np.float32))
    decoder.push(np.zeros((2, 3, 4), np.int32))
    with pytest.raises(ValueError, match=r"\(batch, codebooks\) \(2, 4\), earlier pushes \(2, 3\)"):
        decoder.push(np.zeros((2, 4, 1), np.int32))
    with pytest.raises(ValueError, match="exceeds total_frames=10"):
        decoder.push(np.zeros((2, 3, 7), np.int32))
    with pytest.raises(ValueError, match="after 4 of 10 frames"):
        decoder.finish()
    with pytest.raises(ValueError, match="gave audio") as error:
        decode_chunked(lambda c: np.zeros((1, 1, 5), np.float32), np.zeros((1, 1, 20), np.int32), SPF, 4, 1)
    assert "\n" not in str(error.value)


def test_defaults():
    assert frames_for(CHUNK_SECONDS, 50) == 500 and frames_for(OVERLAP_SECONDS, 50) == 50
    assert frames_for(0.1, 50) == 5 and frames_for(0, 50) == 0
    with pytest.raises(ValueError):
        frames_for(-1, 50)


# --------------------------------------------------------------------------------------------------------------
# A tiny random EnCodec (2 LSTM layers, like the real decoder): hop 4, 8000 frames/s.

CHUNK, OVERLAP = 20, 16  # frames for this codec; L = 52


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    import torch
    import transformers

    from musicgen_jax.encodec import EncodecModel

    torch.manual_seed(0)
    hf = transformers.EncodecModel(transformers.EncodecConfig(**{**TINY_ENCODEC, "num_lstm_layers": 2})).eval()
    with torch.no_grad():  # perturb every parameter, as helpers.save_hf_melody does
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("encodec")
    hf.save_pretrained(path)
    return EncodecModel.from_pretrained(path)


def random_codes(codec, N, B=2, seed=0):
    cfg = codec.config
    return np.random.default_rng(seed).integers(0, cfg.codebook_size, (B, cfg.num_quantizers, N)).astype(np.int32)


def snr_db(ref, ours):
    ref, ours = np.asarray(ref, np.float64), np.asarray(ours, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - ours) ** 2), 1e-300)))


def test_real_codec_chunked_matches_one_shot(codec):
    codes = random_codes(codec, 300)
    ref = np.asarray(codec.decode(codes))
    ours = decode_chunked(codec.decode, codes, codec.config.hop_length, CHUNK, OVERLAP)
    assert ours.shape == ref.shape
    snr = snr_db(ref, ours)
    without_overlap = snr_db(ref, decode_chunked(codec.decode, codes, codec.config.hop_length, CHUNK, 0))
    print(f"[chunked] chunk {CHUNK} overlap {OVERLAP} frames: SNR {snr:.1f} dB (overlap 0: {without_overlap:.1f} dB)")
    assert snr >= 60.0
    assert without_overlap < snr  # the overlap is what buys the accuracy


@pytest.mark.parametrize("N", [CHUNK + 2 * OVERLAP, CHUNK + 2 * OVERLAP - 7])
def test_real_codec_short_input_is_the_one_shot_decode(codec, N):
    codes = random_codes(codec, N, seed=1)
    np.testing.assert_array_equal(
        decode_chunked(codec.decode, codes, codec.config.hop_length, CHUNK, OVERLAP), np.asarray(codec.decode(codes))
    )


def test_real_codec_compiles_once_for_every_length(codec):
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    shapes = []

    def decode(codes_BKY):
        shapes.append(codes_BKY.shape)
        return codec.decode(codes_BKY)

    spf = codec.config.hop_length
    decode_chunked(decode, random_codes(codec, 61, seed=2), spf, CHUNK, OVERLAP)  # compiles the window program
    monitoring.register_event_duration_secs_listener(listener)
    try:
        for N, seed in [(97, 3), (150, 4), (233, 5)]:
            codes = random_codes(codec, N, seed=seed)
            assert decode_chunked(decode, codes, spf, CHUNK, OVERLAP).shape == (2, 1, N * spf)
        chunked_compiles = len(compiles)
        codec.decode(random_codes(codec, 77, seed=6))  # control: a one-shot decode of a new length does compile
    finally:
        monitoring.unregister_event_duration_listener(listener)
    assert set(shapes) == {(2, codec.config.num_quantizers, CHUNK + 2 * OVERLAP)}
    assert chunked_compiles == 0, f"{chunked_compiles} programs compiled for new lengths"
    assert len(compiles) > 0
