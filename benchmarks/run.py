"""One command for the whole comparison: ``python -m benchmarks.run [--quick] [--only ...]``.

Each benchmark runs against its own fresh aicli server and database. Where the
server is unavailable, the aicli side is skipped with the reason and the rest
still runs, so that the SDK and spawn-per-task numbers never depend on it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aicli.actors.claude_bin import find_claude
from benchmarks import (
    api_proxy,
    fanout,
    latency,
    longpoll,
    memory,
    read_path,
    ref,
    report,
    sandbox,
    throughput,
    trip,
)
from benchmarks.fake import FakeApi, measure_floor
from benchmarks.options import Options
from benchmarks.runs import median_of
from benchmarks.server import ServerUnavailable, default_settings_text

HERE = Path(__file__).resolve().parent


def _quick_only(measure: Callable[[FakeApi, bool], dict[str, Any]]) -> Section:
    return lambda fake, options: measure(fake, options.quick)


Section = Callable[[FakeApi, Options], dict[str, Any]]
SECTIONS: dict[str, Section] = {
    "fake": _quick_only(measure_floor),
    "latency": latency.measure,
    "longpoll": _quick_only(longpoll.measure),
    "throughput": _quick_only(throughput.measure),
    "read": read_path.measure,
    "fanout": _quick_only(fanout.measure),
    "memory": _quick_only(memory.measure),
    "api_proxy": _quick_only(api_proxy.measure),
    "sandbox": _quick_only(sandbox.measure),
    "trip": trip.measure,
}
# The hot-path rows: run --runs times (fresh servers each time), the median reported.
REPEATED = ("latency", "read")


def _sections(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="aicli's overhead over Claude Code itself, side by side (see README.md).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer samples; skip the 1,000,000-task table"
    )
    parser.add_argument(
        "--only",
        type=_sections,
        default=list(SECTIONS),
        metavar="NAMES",
        help=f"comma list of benchmarks to run, from: {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="where latest.json and bench.png go"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help=f"runs of {', '.join(REPEATED)} whose median is reported (default 3; --quick: 1)",
    )
    parser.add_argument(
        "--ref",
        metavar="REV",
        help="also run the server side of the hot-path rows from this git revision "
        "(or a checkout directory) beside ours: the before/after table (README.md)",
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


def _total_ram() -> int | None:
    """MemTotal from /proc/meminfo, in bytes (None where there is no /proc)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _claude_version() -> str:
    done = subprocess.run([find_claude(), "--version"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _measured(name: str, fake: FakeApi, options: Options, runs: int) -> dict[str, Any]:
    """One run, or for the hot-path rows the median of ``runs`` (each on fresh servers)."""
    if name not in REPEATED:
        return SECTIONS[name](fake, options)
    done = []
    for index in range(runs):
        print(f"   run {index + 1} of {runs}", flush=True)
        done.append(SECTIONS[name](fake, replace(options, first_run=index == 0)))
    return median_of(done)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ref_executable, ref_label = ref.prepare(args.ref) if args.ref else (None, None)
    results: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "sections": args.only,
            "cores": os.cpu_count(),
            "ram_bytes": _total_ram(),
            # Other work on the machine shows here; it makes every number noisier.
            "load_average_at_start": os.getloadavg()[0],
            "python": sys.version.split()[0],
            "claude_version": _claude_version(),
            "server_settings": default_settings_text(),
            "runs": args.runs,
            "ref": ref_label,
        },
        "skipped": {},
        "failed": {},
    }
    options = Options(args.quick, ref_executable)
    with FakeApi() as fake:
        for name in args.only:
            print(f"== {name}", flush=True)
            started = time.perf_counter()
            try:
                results[name] = _measured(name, fake, options, args.runs)
            except ServerUnavailable as exc:
                results["skipped"][name] = f"aicli server unavailable: {exc}"
            except Exception as exc:  # one broken benchmark must not lose the others' numbers
                traceback.print_exc()
                results["failed"][name] = f"{type(exc).__name__}: {exc}"
            print(f"   {time.perf_counter() - started:.1f} s", flush=True)
    results["meta"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["meta"]["load_average_at_end"] = os.getloadavg()[0]
    results["goals"] = report.goal_checks(results)
    print()
    report.print_table(results)
    # Only a full run that completed may replace the committed RESULTS.md and plot.
    full = not args.quick and args.only == list(SECTIONS) and not results["failed"]
    for path in report.write(results, args.out, HERE if full else None):
        print(f"wrote {path}")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
