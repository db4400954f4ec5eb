"""``python -m convert --src SRC --dst DST [--dtype bfloat16]``: the same as ``musicgen-jax convert``."""

import sys

from musicgen_jax.cli import main

sys.exit(main(["convert", *sys.argv[1:]], exiting=True))
