#!/usr/bin/env python3
"""The long fuzzing run, in two steps; both must pass.

1. ``tests/test_fuzz.py`` with a bigger budget and a seed: every operation, valid
   and invalid input, real ids mixed in by hooks.
2. The ``schemathesis run`` command with every phase (examples, coverage,
   fuzzing, stateful chains through the OpenAPI links) and every check that
   applies (see ``EXCLUDED_CHECKS``), against a server started here on the fake
   Anthropic API and a temporary workspace.

The suite runs step 1 with a small budget so CI stays fast; this script is for
before a release, or after a change to validation or the OpenAPI document.

    .venv/bin/python scripts/fuzz.py --examples 300 --seed 7
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aicli import Runtime  # noqa: E402
from aicli.actors.claude_bin import find_claude  # noqa: E402
from aicli.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from tests.http_server import serving  # noqa: E402

TOKEN = "fuzz-token"
# Two checks cannot hold for this API by design: ids and cursors are opaque and
# workdirs must exist, so values that merely look valid are refused; and DELETE
# closes or cancels but keeps the record, so it stays readable. A body past the
# size limit is refused with 413, whatever else is wrong with it.
EXCLUDED_CHECKS = "positive_data_acceptance,use_after_free"
CONFIG = """
[checks]
negative_data_rejection.expected-statuses = [
    400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429,
]
"""


def run_suite_test(examples: int, seed: int) -> int:
    env = {**os.environ, "FUZZ_MAX_EXAMPLES": str(examples), "FUZZ_SEED": str(seed)}
    command = [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-p", "no:cacheprovider"]
    return subprocess.run([*command, "--timeout=0", "-q"], cwd=REPO, env=env).returncode


def run_schemathesis(examples: int, seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="aicli-fuzz-") as scratch, FakeAnthropic() as fake:
        base = Path(scratch)
        (base / "workspace" / "project").mkdir(parents=True)
        (base / "home").mkdir()
        runtime = Runtime.start(
            claude_bin=find_claude(),
            claude_env={**fake.env(), "HOME": str(base / "home"), "PATH": os.environ["PATH"]},
            database_url=f"sqlite:///{base}/aicli.db",
            api_token=TOKEN,
            workspace_root=str(base / "workspace"),
            max_sessions=20,
            max_pending_per_session=5,
            threads=12,
            max_streams=3,
        )
        try:
            with serving(runtime) as url:
                (base / "schemathesis.toml").write_text(CONFIG)
                command = [
                    str(Path(sys.executable).with_name("schemathesis")),
                    f"--config-file={base / 'schemathesis.toml'}",
                    "run",
                    f"{url}/openapi.json",
                    f"--header=Authorization: Bearer {TOKEN}",
                    "--checks=all",
                    f"--exclude-checks={EXCLUDED_CHECKS}",
                    f"--max-examples={examples}",
                    f"--seed={seed}",
                    "--no-color",
                ]
                return subprocess.run(command, cwd=scratch).returncode
        finally:
            runtime.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, default=300, help="cases per operation and mode (default 300)"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    print(f"fuzzing with {args.examples} cases per operation and mode, seed {seed}", flush=True)
    suite = run_suite_test(args.examples, seed)
    cli = run_schemathesis(args.examples, seed)
    print(f"tests/test_fuzz.py: exit {suite}; schemathesis run: exit {cli}")
    return suite or cli


if __name__ == "__main__":
    sys.exit(main())
