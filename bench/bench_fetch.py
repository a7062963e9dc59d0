"""Fetch benchmark (corebuild vs img2dataset, per core, loopback server with 20 ms latency).

Prints figures, asserts nothing about speed. Usage:
    .venv/bin/python bench/bench_fetch.py [--n 2000] [--repeat 2] [--skip-img2dataset] [--skip-providers]
See bench/fetch/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fetch"))

from run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
