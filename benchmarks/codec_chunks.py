"""The chunked EnCodec decode (issue 18): SNR, time and peak memory of decoding 30 s of random codes through a
random-init codec of the real 32 kHz EnCodec shape, one-shot, chunked, and HF's torch decode. Not a test.

    python benchmarks/codec_chunks.py setup            # the HF codec checkpoint and the codes, under /tmp/cd
    python benchmarks/codec_chunks.py run hf           # one measurement per fresh process: hf | oneshot | chunked C O
    python benchmarks/codec_chunks.py run oneshot
    python benchmarks/codec_chunks.py run chunked 500 50    # chunk and overlap in frames (50 frames/s)

Peak growth is VmHWM (reset through /proc/self/clear_refs) minus VmRSS before the call; "first" includes compiling,
"second" is the best time and largest growth over 3 more calls. SNR: compare the saved out-*.npy files with
out-oneshot.npy. The codec is random-init: a trained one may forget its zero start state more slowly.
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench.specs import ENCODEC_32KHZ  # noqa: E402

ROOT = "/tmp/cd"
CKPT, CODES = f"{ROOT}/codec32", f"{ROOT}/codes.npy"
REAL_32K = ENCODEC_32KHZ  # the benchmark's 32 kHz codec shape


def kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def timed(fn):
    reset_peak()
    before = kib("VmRSS")
    t = time.perf_counter()
    out = np.asarray(fn())
    return out, time.perf_counter() - t, (kib("VmHWM") - before) / 2**20


def setup():
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.EncodecModel(transformers.EncodecConfig(**REAL_32K)).eval()
    hf.save_pretrained(CKPT)
    np.save(CODES, np.random.default_rng(0).integers(0, 2048, (1, 4, 1500)).astype(np.int32))


def run(mode, C=None, O=None):
    codes = np.load(CODES)
    if "FRAMES" in os.environ:  # longer inputs: the 30 s of codes repeated
        codes = np.tile(codes, (1, 1, -(-int(os.environ["FRAMES"]) // 1500)))[:, :, : int(os.environ["FRAMES"])]
    if mode == "hf":
        import torch
        import transformers

        hf = transformers.EncodecModel.from_pretrained(CKPT).eval()

        def fn():
            with torch.no_grad():
                return hf.decode(torch.from_numpy(codes).long()[None], [None])[0].numpy()
    else:
        from musicgen_jax.chunked_decode import decode_chunked
        from musicgen_jax.encodec import EncodecModel

        m = EncodecModel.from_pretrained(CKPT)
        if mode == "oneshot":

            def fn():
                return m.decode(codes)
        else:

            def fn():
                return decode_chunked(m.decode, codes, m.config.hop_length, C, O)

    out, t1, g1 = timed(fn)
    steady = [timed(fn)[1:] for _ in range(3)]
    t2, g2 = min(t for t, _ in steady), max(g for _, g in steady)
    name = (mode if mode != "chunked" else f"chunked-{C}-{O}") + (
        f"-{codes.shape[2]}f" if codes.shape[2] != 1500 else ""
    )
    np.save(f"{ROOT}/out-{name}.npy", out)
    print(json.dumps(dict(name=name, first_s=t1, first_gib=g1, second_s=t2, second_gib=g2)))


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup()
    else:
        run(sys.argv[2], *map(int, sys.argv[3:]))
