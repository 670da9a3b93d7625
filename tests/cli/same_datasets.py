"""Whether two ketasim result files hold the same datasets, bit for bit: the same groups and
datasets, each of the same type and shape with the same stored values (NaN payloads included) and
the same attributes; root attributes too, except the provenance that says where and when a file
was written. Used by tests/cli/shards.sh to compare a merged file with the run done whole.

Prints each difference, then "<n> datasets identical (<s> summaries)"; exits 1 on any difference.
usage: same_datasets.py A.h5 B.h5
"""
import sys

import h5py
import numpy as np

# Root attributes that may differ between a whole run and a merge of its shards (docs/hdf5-layout.md).
PROVENANCE = {"created_utc", "host", "threads", "merged_shard_files", "merged_shard_hosts",
              "merged_shard_created_utc", "merged_shard_threads", "mpi_ranks", "mpi_rank_busy_seconds"}


def same_value(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return a.shape == b.shape and [str(x) for x in a.ravel()] == [str(x) for x in b.ravel()]
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def objects(f):
    found = {"/": f}
    f.visititems(lambda name, obj: found.__setitem__(name, obj))
    return found


def main(path_a, path_b):
    problems = []
    with h5py.File(path_a, "r") as fa, h5py.File(path_b, "r") as fb:
        a, b = objects(fa), objects(fb)
        for name in sorted(set(a) ^ set(b)):
            problems.append(f"{name}: only in {path_a if name in a else path_b}")
        datasets = summaries = 0
        for name in sorted(set(a) & set(b)):
            x, y = a[name], b[name]
            if isinstance(x, h5py.Dataset) != isinstance(y, h5py.Dataset):
                problems.append(f"{name}: a dataset in one file, a group in the other")
                continue
            skip = PROVENANCE if name == "/" else set()
            for key in sorted((set(x.attrs) | set(y.attrs)) - skip):
                if key not in x.attrs or key not in y.attrs:
                    problems.append(f"{name} attribute {key}: only in one file")
                elif not same_value(x.attrs[key], y.attrs[key]):
                    problems.append(f"{name} attribute {key}: {x.attrs[key]!r} != {y.attrs[key]!r}")
            if isinstance(x, h5py.Dataset):
                datasets += 1
                summaries += "/summary/" in name
                if x.dtype != y.dtype or x.shape != y.shape:
                    problems.append(f"{name}: {x.dtype} {x.shape} != {y.dtype} {y.shape}")
                elif not same_value(x[()], y[()]):
                    problems.append(f"{name}: the values differ")
                elif "/summary/" in name and not np.isfinite(x[()]).any():
                    problems.append(f"{name}: no finite value (summaries that were not computed?)")
    for problem in problems:
        print("DIFFERENT:", problem)
    print(f"{datasets} datasets identical ({summaries} summaries)" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
