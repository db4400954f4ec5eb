"""HF (PyTorch, the reference) and musicgen-jax behind the same timed calls: load, generate with its parts, T5,
EnCodec decode.

HF's generate is split by spying on its modules (``text_encoder.forward``, ``decoder.forward``: its first call in a
generate is the prefill, each later one a step; and ``audio_encoder.decode``); musicgen-jax's
by its own public ``GenerateOutput.stats``. musicgen-jax is never patched. Both also give the codes of a short greedy
generate (``--check-greedy``): HF's as it hands them to EnCodec (HF returns no codes), JAX's ``audio_codes``.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from benchmarks.bench import device, specs
from benchmarks.bench.device import Target
from benchmarks.bench.specs import GENERATE_KWARGS, GREEDY_KWARGS


class Spy:
    """Replaces ``owner.attr`` of an HF (torch) module with a wrapper that times each call; ``restore`` undoes it.

    ``sync`` waits for torch's queued device work before and after each call (CUDA; a no-op on CPU), so that the
    time is the call's, not its launch's; with ``synced_calls`` only the first that many calls since the last
    ``take``/``take_each`` wait (a spy on every decode step must not stop HF's launches from running ahead of the
    GPU). While ``capture`` is set, each call's first argument is kept."""

    def __init__(self, owner, attr: str, sync=None, synced_calls: int | None = None):
        if type(owner).__module__.startswith("musicgen_jax"):
            raise TypeError("musicgen-jax is timed through its public stats, never patched")
        self.owner, self.attr = owner, attr
        self.original = getattr(owner, attr)
        self.times: list[float] = []
        self.capture, self.captured = False, []
        always = sync or (lambda: None)

        @functools.wraps(self.original)  # keeps the signature: HF inspects text_encoder.forward's parameters
        def wrapper(*args, **kwargs):
            if self.capture:
                self.captured.append(args[0])
            sync = always if synced_calls is None or len(self.times) < synced_calls else (lambda: None)
            sync()
            t0 = time.perf_counter()
            out = self.original(*args, **kwargs)
            sync()
            self.times.append(time.perf_counter() - t0)
            return out

        setattr(owner, attr, wrapper)

    def take(self) -> float:
        return sum(self.take_each())

    def take_each(self) -> list[float]:
        """Each call's seconds since the last take, in order; starts a new count."""
        times, self.times = self.times, []
        return times

    def restore(self):
        setattr(self.owner, self.attr, self.original)


class HFSide:
    """HF ``MusicgenMelodyForConditionalGeneration`` (or, for a plain MusicGen ``spec``,
    ``MusicgenForConditionalGeneration``) in the target's dtype, eval, under ``torch.inference_mode``, on the target's
    torch device (``cpu`` or ``cuda``; every CUDA timing synchronizes before and after). Both families' generate call
    ``text_encoder`` once and ``audio_encoder.decode(codes (1, B, K, frames), scales)`` once (mono)."""

    def __init__(self, path: str, steps: int, inner: int, target: Target, spec: dict | None = None):
        import torch

        self.torch, self.steps, self.inner = torch, steps, inner
        self.dev, self.sync = target.torch_device, device.torch_sync(target)
        t0 = time.perf_counter()
        model = specs.hf_class(spec or {}).from_pretrained(path, dtype=device.torch_dtype(target))
        self.model = model.to(self.dev).eval()
        self.sync()
        self.load_s = time.perf_counter() - t0
        self.t5_spy = Spy(self.model.text_encoder, "forward", self.sync)
        self.codec_spy = Spy(self.model.audio_encoder, "decode", self.sync)
        self.decoder_spy = Spy(self.model.decoder, "forward", self.sync, synced_calls=1)  # the prefill waits

    def set_inputs(self, ids: np.ndarray, mask: np.ndarray):
        self.ids = self.torch.from_numpy(ids).to(self.dev)
        self.mask = self.torch.from_numpy(mask).to(self.dev)

    def generate(self, seed: int, new_tokens: int | None = None, **kwargs) -> dict:
        """Seconds of one generate: total, and the T5 and EnCodec calls inside it; the rest is the decode loop, of
        which ``prefill`` is the decoder's first forward (the conditioning prefix and BOS, CFG rows) and
        ``decoder_step`` the median of its later forwards (one position each; None on CUDA, where those calls are
        not waited for). ``kwargs`` replace the sampling arguments (``GENERATE_KWARGS``)."""
        self.torch.manual_seed(seed)
        self.sync()
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            self.model.generate(
                input_ids=self.ids,
                attention_mask=self.mask,
                max_new_tokens=new_tokens or self.steps,
                **(kwargs or GENERATE_KWARGS),
            )
        self.sync()
        total = time.perf_counter() - t0
        t5, codec = self.t5_spy.take(), self.codec_spy.take()
        calls = self.decoder_spy.take_each()
        step = float(np.median(calls[1:])) if len(calls) > 1 and self.dev != "cuda" else None
        prefill = calls[0]
        return {
            "total": total,
            "t5": t5,
            "encodec": codec,
            "loop": total - t5 - codec,
            "prefill": prefill,
            "decoder_step": step,
        }

    def greedy_codes(self, new_tokens: int) -> np.ndarray:
        """The codes ``(batch, K, frames)`` of a greedy generate (``GREEDY_KWARGS``), as HF hands them to EnCodec."""
        self.codec_spy.capture, self.codec_spy.captured = True, []
        try:
            self.generate(0, new_tokens, **GREEDY_KWARGS)
        finally:
            self.codec_spy.capture = False
        (codes,) = self.codec_spy.captured  # (1, batch, K, frames): one mono decode
        self.codec_spy.captured = []
        return codes[0].cpu().numpy()

    def t5(self) -> float:
        """Seconds of one T5 encode, averaged over ``inner`` calls."""
        self.sync()
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            for _ in range(self.inner):
                self.t5_spy.original(input_ids=self.ids, attention_mask=self.mask)
        self.sync()
        return (time.perf_counter() - t0) / self.inner

    def codec(self, codes: np.ndarray) -> float:
        """Seconds of ``audio_encoder.decode`` on int codes ``(batch, K, frames)`` (batch 1; moved to the device
        before the clock starts)."""
        codes = self.torch.from_numpy(np.asarray(codes, np.int64)).to(self.dev)
        self.sync()
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            self.codec_spy.original(codes[None], [None])
        self.sync()
        return time.perf_counter() - t0

    def close(self):
        """Restores the spied methods and drops the model (frees its memory before the JAX-only measurements)."""
        import gc

        for spy in (self.t5_spy, self.codec_spy, self.decoder_spy):
            spy.restore()
        self.model = self.t5_spy = self.codec_spy = self.decoder_spy = self.ids = self.mask = None
        gc.collect()
        if self.dev == "cuda":
            self.torch.cuda.empty_cache()


class JaxSide:
    """musicgen-jax's ``MusicgenMelodyForConditionalGeneration`` (or, for a plain MusicGen ``spec``,
    ``MusicgenForConditionalGeneration``) in the target's dtype, on JAX's default device; every timing waits for its
    results."""

    def __init__(self, path: str, steps: int, inner: int, target: Target, spec: dict | None = None):
        import jax

        self.jax, self.steps, self.inner = jax, steps, inner
        t0 = time.perf_counter()
        self.model = specs.jax_class(spec or {}).from_pretrained(path, dtype=device.jax_dtype(target))
        jax.block_until_ready(self.model.params)
        self.load_s = time.perf_counter() - t0

    def set_inputs(self, ids: np.ndarray, mask: np.ndarray):
        self.ids, self.mask = ids, mask

    def generate(self, seed: int):
        """Seconds of one generate and its parts from ``GenerateOutput.stats`` (compilation counted apart):
        ``decode`` is the loop (``prefill`` + ``scan``, the scanned steps); returns (parts, output)."""
        t0 = time.perf_counter()
        out = self.model.generate(
            input_ids=self.ids,
            attention_mask=self.mask,
            max_new_tokens=self.steps,
            seed=seed,
            return_dict_in_generate=True,
            **GENERATE_KWARGS,
        )
        total = time.perf_counter() - t0
        s = out.stats
        parts = {
            "total": total,
            "t5": s["text_encode_seconds"],
            "prompt": s["prompt_seconds"],
            "prefill": s["prefill_seconds"],
            "scan": s["decode_seconds"],
            "decode": s["prefill_seconds"] + s["decode_seconds"],
            "encodec": s["codec_decode_seconds"],
            "compile": s["compile_seconds"],
            "decode_steps": s["decode_steps"],
        }
        parts["other"] = total - sum(parts[k] for k in ("t5", "prompt", "decode", "encodec", "compile"))
        return parts, out

    def greedy_codes(self, new_tokens: int) -> np.ndarray:
        """The codes ``(batch, K, frames)`` of a greedy generate (``GREEDY_KWARGS``)."""
        out = self.model.generate(
            input_ids=self.ids,
            attention_mask=self.mask,
            max_new_tokens=new_tokens,
            return_dict_in_generate=True,
            **GREEDY_KWARGS,
        )
        return np.asarray(out.audio_codes)

    def t5(self) -> float:
        """Seconds of one ``encode_text``, averaged over ``inner`` calls."""
        t0 = time.perf_counter()
        for _ in range(self.inner):
            self.model.encode_text(self.ids, self.mask).block_until_ready()
        return (time.perf_counter() - t0) / self.inner

    def codec(self, codes) -> float:
        """Seconds of ``audio_encoder.decode`` on int codes ``(batch, K, frames)``."""
        t0 = time.perf_counter()
        self.model.audio_encoder.decode(codes).block_until_ready()
        return time.perf_counter() - t0
