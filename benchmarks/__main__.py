"""Run every benchmark and write docs/benchmarks.md.

    python -m benchmarks                  # everything, as recorded in docs/benchmarks.md
    python -m benchmarks --quick          # small sizes, to check that the benchmarks run
    python -m benchmarks --demo           # also time the demo main job from an empty home
    python -m benchmarks --demo-home .wta # or read the stages of a finished demo run

Each figure is a median over repeated runs with its ratio against a baseline measured in the
same process. Timings depend on the machine and on what else runs on it; the page records
both.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

from benchmarks import end_to_end, scoring, storage, training, transport

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine_description() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.system()} {platform.machine()}, {model}, {os.cpu_count()} cores, {memory:.0f} GiB, "
            f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat")
    parser.add_argument("--demo", action="store_true",
                        help="run the demo main job from an empty home (about an hour on 2 cores)")
    parser.add_argument("--demo-home", help="WTA home of a finished demo run, for its stage times")
    parser.add_argument("--transport-sizes", type=int, nargs="+", help="cloud sizes of the transport benchmark")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="Markdown file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = machine_description()
    sections = []
    transport_results = transport.run(quick=args.quick, sizes=args.transport_sizes)
    sections.append(("1. Wasserstein distance per step", transport.to_markdown(transport_results)))
    sections.append(("2. Scoring a whole run", scoring.to_markdown(scoring.run(quick=args.quick))))
    sections.append(("3. Training", training.to_markdown(training.run(quick=args.quick))))
    sections.append(("4. End to end", end_to_end.to_markdown(end_to_end.run(quick=args.quick,
                                                                             demo_home=args.demo_home,
                                                                             demo=args.demo))))
    sections.append(("5. Trajectory storage", storage.to_markdown(storage.run(quick=args.quick))))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    lines = ["# Benchmarks", "", f"Command: `{command.strip()}`", "",
             f"Date: {started:%Y-%m-%d %H:%M} UTC; code {commit}", "", f"Machine: {machine}", ""]
    for title, body in sections:
        lines += [f"## {title}", "", body, ""]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
