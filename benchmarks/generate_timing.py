"""Times ``generate`` through public API only, so that the same script runs on any commit (a refactor's before/after).

    python benchmarks/generate_timing.py [--layers 24 --width 1024 --steps 64 --batch 1 --repeats 5]

A musicgen-small-sized decoder (random weights from ``training.init_params``, unrolled layout) with the tiny T5 and
codec of ``demo.tiny_config``; melody-free text prompts, CFG 3, top-k 250, sampling. Prints the minimum and median
seconds of ``generate`` after one warm-up call (compile excluded), and the decode steps per second.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from musicgen_jax import MusicgenMelodyForConditionalGeneration, decoder, training
    from musicgen_jax.demo import tiny_config

    config = tiny_config()
    heads = args.width // 64
    config = dataclasses.replace(
        config,
        decoder=dataclasses.replace(
            config.decoder,
            hidden_size=args.width,
            num_hidden_layers=args.layers,
            num_attention_heads=heads,
            ffn_dim=4 * args.width,
        ),
    )
    params = training.init_params(config, 0)
    params["decoder"] = decoder.unstack_layers(params["decoder"])
    model = MusicgenMelodyForConditionalGeneration(config, params)
    ids = np.random.default_rng(0).integers(3, 100, size=(args.batch, 12))
    kwargs = dict(
        input_ids=ids,
        attention_mask=np.ones_like(ids),
        max_new_tokens=args.steps,
        do_sample=True,
        guidance_scale=3.0,
        top_k=250,
        seed=0,
    )
    model.generate(**kwargs)  # compile
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        np.asarray(model.generate(**kwargs))
        times.append(time.perf_counter() - t0)
    print(
        f"generate: min {min(times):.3f} s, median {statistics.median(times):.3f} s over {args.repeats} "
        f"({args.layers} layers x {args.width}, batch {args.batch}, {args.steps} steps): "
        f"{args.steps / min(times):.1f} steps/s at best"
    )


if __name__ == "__main__":
    main()
