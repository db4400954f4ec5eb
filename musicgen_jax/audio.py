"""Audio file input and output: ``load`` any file soundfile/librosa can read, ``save_wav`` a waveform, ``WavWriter``
a WAV that grows as the audio is produced.

Arrays are float32 and channels-first, (channels, samples), as the feature extractor and EnCodec take them. Resampling
uses the feature extractor's resampler (:func:`musicgen_jax.resample.resample`, torchaudio's Hann-windowed sinc, with
HF's ``lowpass_filter_width=24, rolloff=0.945``), so ``fe(load(path, 32000)[0][None])`` and
``fe(load(path)[0][None], sampling_rate=rate)`` give the same features.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import warnings
from typing import Any

import numpy as np

from musicgen_jax.errors import one_line
from musicgen_jax.files import atomic_write
from musicgen_jax.resample import HF_LOWPASS_FILTER_WIDTH, HF_ROLLOFF, resample


class AudioError(ValueError):
    """An audio file that cannot be read or written, or audio that is empty or not finite."""


class Waveform(np.ndarray):
    """ONE audio clip, float32, channels-first ``(channels, samples)`` (or ``(samples,)``): what :func:`load` returns.

    A plain numpy array: slices and arithmetic stay Waveforms, ``np.asarray`` gives the bare array. The only
    difference is how the feature extractor (and so the processor) reads it: a 2-D Waveform is one clip whose channels
    are averaged to mono, where a plain 2-D array is, as in HF, a batch of mono clips; a list of Waveforms is a batch
    of clips. ``Waveform(array)`` marks an array of your own as one clip.
    """

    def __new__(cls, data) -> Waveform:
        array = np.asarray(data, np.float32)
        if array.ndim not in (1, 2):
            raise ValueError(f"a Waveform is one clip, (samples,) or (channels, samples); got shape {array.shape}")
        return array.view(cls)


def _read(path: str) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the rate: soundfile, else librosa (audioread) for other formats."""
    import soundfile

    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(rate)
    except Exception as soundfile_error:  # libsndfile raises LibsndfileError / RuntimeError / TypeError by format
        try:
            import librosa

            # librosa retries soundfile, then audioread (ffmpeg etc.: m4a, aac, ...) with deprecation noise we mute.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, rate = librosa.load(path, sr=None, mono=False, dtype=np.float32)
        except Exception:
            raise AudioError(f"{path}: cannot read audio ({one_line(soundfile_error)})") from None
        return np.atleast_2d(np.asarray(data, np.float32)), int(rate)


def load(path: str | os.PathLike, sampling_rate: int | None = None) -> tuple[Waveform, int]:
    """Reads an audio file.

    Args:
        path: any format soundfile (libsndfile: wav, flac, ogg, mp3, ...) or librosa reads.
        sampling_rate: resample to this rate (Hz) when given and different from the file's.

    Returns:
        ``(audio, rate)``: a :class:`Waveform`, float32 (channels, samples) in [-1, 1] for integer formats (mono
        files give (1, samples)), and its rate in Hz. The processor reads it as one clip (stereo is averaged to
        mono): ``processor(text=[...], audio=audio, sampling_rate=rate)``; pass ``[audio] * n`` for n texts.

    Raises:
        AudioError: the file is missing or unreadable, holds no samples, or holds NaN or infinite samples.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    audio, rate = _read(path)
    if audio.size == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    if sampling_rate is not None and sampling_rate != rate:
        try:
            audio = resample(
                audio, rate, sampling_rate, lowpass_filter_width=HF_LOWPASS_FILTER_WIDTH, rolloff=HF_ROLLOFF
            )
        except ValueError as e:
            raise AudioError(f"{path}: cannot resample from {rate} Hz ({one_line(e)})") from None
        rate = int(sampling_rate)
    return Waveform(audio), rate


SOFTWARE_TAG = "musicgen-jax"  # the WAV's INFO/ISFT string: how a later run knows the file is ours to replace


def written_by_musicgen_jax(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a WAV file that :func:`save_wav` wrote (its software tag says so)."""
    import soundfile

    try:
        with soundfile.SoundFile(os.fspath(path)) as f:
            return (f.software or "").startswith(SOFTWARE_TAG)
    except Exception:  # not audio, unreadable, not a file: not ours
        return False


def save_wav(path: str | os.PathLike, audio: Any, sampling_rate: int, subtype: str = "FLOAT") -> None:
    """Writes a WAV file atomically: under a temporary name in the same folder, then renamed over ``path``, so an
    interrupted write never leaves a truncated file under ``path`` (it keeps the old file, if any, or none).

    Args:
        path: the file to write (its directory must exist).
        audio: float (samples,) mono or (channels, samples); numpy, JAX or anything with ``__array__``.
        sampling_rate: in Hz, a positive integer.
        subtype: a soundfile WAV subtype; the default "FLOAT" stores float32 exactly, "PCM_16" clips to [-1, 1].

    Raises:
        AudioError: empty or non-finite audio, a bad shape or rate, or a file that cannot be written.
    """
    import soundfile

    path = os.fspath(path)
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2:
        raise AudioError(f"{path}: audio must be (samples,) or (channels, samples), got shape {data.shape}")
    if data.shape[0] > 32:
        raise AudioError(
            f"{path}: audio of shape {data.shape} has {data.shape[0]} channels; expected "
            "(channels, samples) - transpose a (samples, channels) array"
        )
    if data.size == 0:
        raise AudioError(f"{path}: no audio samples to write (shape {data.shape})")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise AudioError(f"{path}: sampling_rate must be a positive integer, got {sampling_rate!r}")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory")
    try:
        with atomic_write(path, "r+b") as raw:
            with soundfile.SoundFile(
                raw, "w", samplerate=int(sampling_rate), channels=data.shape[0], subtype=subtype, format="WAV"
            ) as f:
                f.software = SOFTWARE_TAG
                f.write(data.T)
    except Exception as e:
        raise AudioError(f"{path}: cannot write WAV ({one_line(e)})") from None


_WAVE_FORMAT_IEEE_FLOAT = 3
_MAX_RIFF_BYTES = 2**32 - 1  # RIFF sizes are 32-bit: a WAV holds at most 4 GiB


def _riff_chunk(chunk_id: bytes, payload: bytes) -> bytes:
    """A RIFF chunk: id, little-endian size, payload, and a pad byte when the size is odd."""
    return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)


def _float_wav_header(sampling_rate: int, channels: int) -> tuple[bytes, int, int]:
    """The header of an empty 32-bit float WAV: RIFF, fmt, fact, LIST/INFO (ISFT = SOFTWARE_TAG), then the data
    chunk's id and size last, so the samples can grow at the end. Returns it and the offsets of the fact sample count
    and of the data size."""
    block = 4 * channels
    fmt = struct.pack("<HHIIHH", _WAVE_FORMAT_IEEE_FLOAT, channels, sampling_rate, sampling_rate * block, block, 32)
    tag = SOFTWARE_TAG.encode("ascii") + b"\0"
    info = _riff_chunk(b"LIST", b"INFO" + _riff_chunk(b"ISFT", tag))
    head = b"WAVE" + _riff_chunk(b"fmt ", fmt)
    fact_offset = 8 + len(head) + 8
    body = head + _riff_chunk(b"fact", struct.pack("<I", 0)) + info + b"data" + struct.pack("<I", 0)
    return b"RIFF" + struct.pack("<I", len(body)) + body, fact_offset, 8 + len(body) - 4


def _is_positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value > 0


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Writes all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class WavWriter:
    """A 32-bit float WAV file that grows as audio is appended, playable while it grows, and becomes ``path``
    atomically at the end.

    The audio goes to ``<stem>.partial-<8 hex>.wav`` beside ``path`` (``partial_path``; created exclusively, never
    over an existing file). After every :meth:`append` that file is a valid WAV holding all samples so far (the
    samples are written first, then the header's sizes, so a process killed at any moment leaves a readable file).
    :meth:`close` fsyncs it and renames it onto ``path``; :meth:`abort` removes it; as a context manager it closes on
    a clean exit and aborts on an exception. The final file holds the same samples as :func:`save_wav` would write and
    carries ``SOFTWARE_TAG``, so :func:`written_by_musicgen_jax` recognises it.

    Args:
        path: the final file (its directory must exist).
        sampling_rate: in Hz, a positive integer.
        channels: audio channels, 1 to 32.

    Raises:
        AudioError: a bad rate or channel count, ``path`` is a directory, or the partial file cannot be created.
    """

    def __init__(self, path: str | os.PathLike, sampling_rate: int, channels: int):
        self.path = os.fspath(path)
        if not _is_positive_int(sampling_rate):
            raise AudioError(f"{self.path}: sampling_rate must be a positive integer, got {sampling_rate!r}")
        if not _is_positive_int(channels) or channels > 32:
            raise AudioError(f"{self.path}: channels must be an integer from 1 to 32, got {channels!r}")
        if os.path.isdir(self.path):
            raise AudioError(f"{self.path}: is a directory")
        self.sampling_rate, self.channels = int(sampling_rate), int(channels)
        self._header, self._fact_offset, self._data_size_offset = _float_wav_header(self.sampling_rate, self.channels)
        self._fd, self.partial_path = self._create_partial()
        self.frames_written = 0
        try:
            _pwrite_all(self._fd, self._header, 0)
        except OSError as e:
            self.abort()
            raise AudioError(f"{self.path}: cannot write {self.partial_path} ({one_line(e)})") from None

    def _create_partial(self) -> tuple[int, str]:
        """Opens a new ``<stem>.partial-<8 hex>.wav`` beside ``path`` with O_EXCL (0o666 less the umask)."""
        folder, name = os.path.split(os.path.abspath(self.path))
        stem = os.path.splitext(name)[0]
        for _ in range(8):  # a name taken by someone else is never touched: draw another
            partial = os.path.join(folder, f"{stem}.partial-{secrets.token_hex(4)}.wav")
            try:
                return os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), partial
            except FileExistsError:
                continue
            except OSError as e:
                raise AudioError(f"{self.path}: cannot create {partial} ({one_line(e)})") from None
        raise AudioError(f"{self.path}: cannot create a partial file beside it (every name tried exists)")

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append(self, audio: Any) -> None:
        """Appends float ``(channels, samples)`` audio (or ``(samples,)`` when mono), stored as float32, and updates
        the header so the partial file is a valid WAV of everything appended so far.

        Raises:
            AudioError: the writer is closed, the audio has another channel count or shape, holds NaN or infinite
                samples (as float32), would take the file past 4 GiB, or cannot be written.
        """
        if self.closed:
            raise AudioError(f"{self.path}: the WAV writer is closed")
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: refused below
            data = np.asarray(audio, dtype=np.float32)
        if data.ndim == 1 and self.channels == 1:
            data = data[None, :]
        if data.ndim != 2 or data.shape[0] != self.channels:
            raise AudioError(
                f"{self.path}: audio must be ({self.channels}, samples) for this {self.channels}-channel file, "
                f"got shape {data.shape}"
            )
        if not np.all(np.isfinite(data)):
            raise AudioError(f"{self.path}: the audio holds NaN or infinite samples")
        samples = np.ascontiguousarray(data.T, dtype="<f4").tobytes()
        data_bytes = 4 * self.channels * self.frames_written
        if len(self._header) - 8 + data_bytes + len(samples) > _MAX_RIFF_BYTES:
            raise AudioError(f"{self.path}: a WAV file holds at most 4 GiB; this append would pass it")
        frames = self.frames_written + data.shape[1]
        try:
            # Samples first, sizes after: a reader (or a kill) in between sees the previous, valid file.
            _pwrite_all(self._fd, samples, len(self._header) + data_bytes)
            _pwrite_all(self._fd, struct.pack("<I", data_bytes + len(samples)), self._data_size_offset)
            _pwrite_all(self._fd, struct.pack("<I", frames), self._fact_offset)
            _pwrite_all(self._fd, struct.pack("<I", len(self._header) - 8 + data_bytes + len(samples)), 4)
        except OSError as e:
            raise AudioError(f"{self.path}: cannot write {self.partial_path} ({one_line(e)})") from None
        self.frames_written = frames

    def close(self) -> None:
        """Fsyncs the partial file and renames it onto ``path`` (replacing any file there).

        Raises:
            AudioError: nothing was appended (the partial file is removed), or the file cannot be synced or moved
                (the partial file is kept, and named in the message).
        """
        if self.closed:
            return
        if self.frames_written == 0:
            self.abort()
            raise AudioError(f"{self.path}: no audio samples to write")
        fd, self._fd = self._fd, None
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.partial_path, self.path)
        except OSError as e:
            message = f"{self.path}: cannot finish the WAV ({one_line(e)}); the audio is in {self.partial_path}"
            raise AudioError(message) from None

    def abort(self) -> None:
        """Closes and removes the partial file; ``path`` is left as it was."""
        if self.closed:
            return
        fd, self._fd = self._fd, None
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.partial_path)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):  # an abandoned writer releases its descriptor and leaves the (valid) partial file
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
