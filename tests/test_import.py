"""`import musicgen_jax` must not import torch or transformers (they are test/convert extras only)."""

import subprocess
import sys


def test_import_does_not_pull_torch_or_transformers():
    code = (
        "import sys, musicgen_jax\n"
        "from musicgen_jax import MusicgenMelodyForConditionalGeneration\n"
        "import musicgen_jax.decoder, musicgen_jax.config, musicgen_jax.conditioning\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing musicgen_jax imported: {out.stdout.strip()}"
