#!/usr/bin/env python3
"""Key checking side by side: `ketasim validate` on a scenario whose top-level map holds many keys,
by two builds (e.g. before and after a change to NodeRef::entries), run alternately so that both
see the same machine load. Prints every time, and the ratio first/second per round with its
median and range. Times are CPU times (user + system) of the validate process, which a shared
machine disturbs far less than wall-clock times.

    /usr/bin/python3 benchmarks/key_checking.py KETASIM_A KETASIM_B [KEYS] [ROUNDS]

Both runs refuse the scenario at its first unknown key (exit 3, the same message), after every
key of the map has been checked for duplicates: the time is YAML parsing plus key checking.
"""
import os
import resource
import statistics
import subprocess
import sys
import tempfile

SCENARIO = """name: many_keys
model: {name: ketamine_clements_2cmt}
cohort: {size: 10, seed: 1, weight: 70 kg}
arms: [{name: weekly, regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 3 weeks}}]
"""


def cpu_seconds_of_children():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def validate(ketasim, path):
    start = cpu_seconds_of_children()
    done = subprocess.run([ketasim, "validate", path], capture_output=True, text=True)
    seconds = cpu_seconds_of_children() - start
    if done.returncode != 3 or "unknown key 'k0'" not in done.stderr:
        sys.exit(f"{ketasim}: expected exit 3 at the unknown key 'k0', got {done.returncode}: {done.stderr.strip()}")
    return seconds


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    first, second = sys.argv[1], sys.argv[2]
    keys = int(sys.argv[3]) if len(sys.argv) > 3 else 80000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "many_keys.yaml")
        with open(path, "w") as out:
            out.write(SCENARIO)
            out.writelines(f"k{k}: {k}\n" for k in range(keys))
        ratios = []
        for r in range(rounds):
            # Alternate which build goes first, so that neither always runs on a warm cache.
            order = [(0, first), (1, second)] if r % 2 == 0 else [(1, second), (0, first)]
            seconds = [0.0, 0.0]
            for index, ketasim in order:
                seconds[index] = validate(ketasim, path)
            ratios.append(seconds[0] / seconds[1])
            print(f"round {r + 1}: first {seconds[0]:.3f} s, second {seconds[1]:.3f} s, ratio {ratios[-1]:.1f}")
    print(f"{keys} keys, {rounds} rounds: first/second median {statistics.median(ratios):.1f}, "
          f"range {min(ratios):.1f} to {max(ratios):.1f}")


if __name__ == "__main__":
    main()
