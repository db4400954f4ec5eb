"""Speed of musicgen-jax against HF transformers (PyTorch) on the same random weights and the same inputs.

From the repository root::

    python -m benchmarks.bench --config small --steps 128 --batch 1 --out benchmarks/results
    python benchmarks/bench.py ...          # the same command, through a 3-line shim

builds (once, cached) a random-weight HF ``MusicgenMelodyForConditionalGeneration`` checkpoint of real shapes with
``save_pretrained``, loads it into HF (float32, eval) and into musicgen-jax (float32), and times, interleaved
(HF then JAX, ``--repeats`` times; medians reported, warm-up reported separately):

  * ``generate`` end to end (text -> audio: T5, CFG sampling loop, EnCodec), plus JAX's first (compiling) call;
  * the decode loop alone (JAX: the prefill and decode seconds of ``generate``'s own ``stats``; HF: ``generate``
    minus the T5 and EnCodec time measured inside the same call);
  * T5 encode, EnCodec decode of the generated frames, and EnCodec decode of ``--encodec-seconds`` of codes;
  * host RSS, a memory-bandwidth reference, and a breakdown of one JAX decode step (prefill / forward / sampling).

Writes ``<out>/<config>-<device>-b<batch>-s<steps>.json`` and ``.md``, and prints the table. Only public names of
``musicgen_jax`` are used (the HF reference is spied on to time its phases). Modules:

  * ``specs``: the model sizes and the cached random checkpoints; the fixed inputs.
  * ``probes``: host probes (read bandwidth until stable, matmul throughput, RSS, machine load, git state).
  * ``sides``: HF and musicgen-jax behind the same timed calls (generate with its parts, T5, EnCodec).
  * ``breakdown``: the JAX decode step taken apart, and its hardware floor.
  * ``run``: one configuration end to end; ``report``: figures, JSON and the markdown table; ``__main__``: the CLI.

See ``benchmarks/README.md`` for what each figure means.
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
