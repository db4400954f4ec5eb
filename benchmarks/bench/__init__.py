"""Speed of musicgen-jax against HF transformers (PyTorch) on the same random weights and the same inputs.

From the repository root::

    python -m benchmarks.bench --config small --steps 128 --batch 1 --out benchmarks/results
    python benchmarks/bench.py ...          # the same command, through a 3-line shim

builds (once, cached) a random-weight HF ``MusicgenMelodyForConditionalGeneration`` checkpoint of real shapes with
``save_pretrained`` (``--config musicgen-small`` / ``musicgen-tiny``: plain MusicGen, HF
``MusicgenForConditionalGeneration``), loads it into HF (eval) and into musicgen-jax (the same family's class), in
``--dtype`` (float32 by default), on ``--device`` (``cpu``; ``gpu``: HF on CUDA, JAX on its GPU backend; ``tpu``:
JAX alone), and times, interleaved (HF then JAX, ``--repeats`` times; medians reported, warm-up reported
separately):

  * ``generate`` end to end (text -> audio: T5, CFG sampling loop, EnCodec), plus JAX's first (compiling) call;
  * the decode loop alone (JAX: the prefill and decode seconds of ``generate``'s own ``stats``; HF: ``generate``
    minus the T5 and EnCodec time measured inside the same call);
  * T5 encode, EnCodec decode of the generated frames, and EnCodec decode of ``--encodec-seconds`` of codes;
  * host RSS (and device memory on an accelerator), the read bandwidth of JAX's device, and a breakdown of one JAX
    decode step (prefill / forward / sampling) against its floor; ``--check-greedy`` compares greedy codes with HF's;
    on an accelerator a targets block (greedy parity, step within 2x of the HBM weight-read floor, 10x HF eager).

Writes ``<out>/<config>-<device>-b<batch>-s<steps>[-bf16].json`` and ``.md``, and prints the table. Only public names of
``musicgen_jax`` are used (the HF reference is spied on to time its phases). Modules:

  * ``device``: where each side runs, the environment set before JAX is imported, the device check, matmul settings.
  * ``specs``: the model sizes and the cached random checkpoints (and musicgen-jax's converted copy); the inputs.
  * ``probes``: read bandwidth until stable, matmul throughput, RSS, device memory, machine load, git state.
  * ``sides``: HF and musicgen-jax behind the same timed calls (generate with its parts, T5, EnCodec).
  * ``breakdown``: the JAX decode step taken apart, and its hardware floor.
  * ``run``: one configuration end to end; ``report``: figures, JSON and the markdown table; ``__main__``: the CLI.

See ``benchmarks/README.md`` for what each figure means.
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
