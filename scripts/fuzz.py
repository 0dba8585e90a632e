#!/usr/bin/env python3
"""The long fuzzing run: ``tests/test_fuzz.py`` with a big budget and a seed.

That test drives the engine behind ``schemathesis run``: every operation, every phase
(examples, coverage, fuzzing, stateful chains along the OpenAPI links) and every check
but ``use_after_free`` (see its docstring), against a live server on the fake Anthropic
API, with hooks that put what no schema can say into valid cases (a workdir that exists,
a cursor the server issued, real ids). The suite runs it with a small budget so CI stays
fast; this script is for before a release, or after a change to the contract, validation
or the OpenAPI document.

    .venv/bin/python scripts/fuzz.py --examples 300 --seed 7
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, default=300, help="cases per operation and phase (default 300)"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    print(f"fuzzing with {args.examples} cases per operation and phase, seed {seed}", flush=True)
    env = {**os.environ, "FUZZ_MAX_EXAMPLES": str(args.examples), "FUZZ_SEED": str(seed)}
    command = [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-p", "no:cacheprovider"]
    return subprocess.run([*command, "--timeout=0", "-q"], cwd=REPO, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
