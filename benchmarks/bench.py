"""Shim: ``python benchmarks/bench.py ...`` is ``python -m benchmarks.bench ...`` (the package benchmarks/bench/)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main()
