#!/usr/bin/env python3
"""Side-by-side throughput of two builds of ketasim_throughput (workload W1), run alternately.

    python3 benchmarks/compare_throughput.py OLD_BINARY NEW_BINARY [--rounds 3] [--subjects 10000]

Runs OLD, NEW, OLD, NEW, ... (--rounds pairs) on the same machine in one session, so that load
from elsewhere falls on both; prints, per configuration (metrics only, trajectories in memory,
run + HDF5 output; 1 and 2 threads), each build's subjects/s per round and the ratio NEW/OLD of
each round with the median and range of the ratios. Each run of ketasim_throughput itself reports
the median of 3 repetitions.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

LINE = re.compile(r"^(?P<config>.+?)\s+threads=(?P<threads>\d+)\s+(?P<rate>[0-9.]+) subjects/s")


def run(binary, subjects, scenario, output_dir):
    text = subprocess.run([binary, "--subjects", str(subjects), "--scenario", scenario, "--output-dir", output_dir],
                          check=True, capture_output=True, text=True).stdout
    rates = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            rates[(match["config"].strip(), int(match["threads"]))] = float(match["rate"])
    if not rates:
        sys.exit(f"compare_throughput: no rates in the output of {binary}:\n{text}")
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=10000)
    parser.add_argument("--scenario", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "w1.yaml"))
    arguments = parser.parse_args()
    old_rates, new_rates = [], []
    with tempfile.TemporaryDirectory() as output_dir:
        for round_number in range(arguments.rounds):
            old_rates.append(run(arguments.old, arguments.subjects, arguments.scenario, output_dir))
            new_rates.append(run(arguments.new, arguments.subjects, arguments.scenario, output_dir))
            print(f"round {round_number + 1} of {arguments.rounds} done", file=sys.stderr)
    print(f"{arguments.subjects} subjects of W1, {arguments.rounds} alternating rounds; subjects/s (each the median of 3)")
    print(f"{'configuration':34} {'old':>22} {'new':>22}  new/old median [range]")
    for key in old_rates[0]:
        old = [rates[key] for rates in old_rates]
        new = [rates[key] for rates in new_rates]
        ratios = [n / o for n, o in zip(new, old)]
        label = f"{key[0]} threads={key[1]}"
        print(f"{label:34} {' '.join(f'{v:7.0f}' for v in old):>22} {' '.join(f'{v:7.0f}' for v in new):>22}  "
              f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]")


if __name__ == "__main__":
    main()
