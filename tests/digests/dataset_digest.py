"""Digest of every dataset in a ketasim result file, for the test that keeps outputs byte for byte
the same across refactoring (tests/digests/check.sh).

The digest covers each dataset's path, type, shape and values (as stored, after decompression), in
path order; attributes are left out because the provenance ones (source revision, host, time)
differ between builds by design. Prints one line: "<sha256> <number of datasets>".
usage: dataset_digest.py RESULTS.h5
"""
import hashlib
import sys

import h5py
import numpy as np


def main(path):
    datasets = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        digest = hashlib.sha256()
        for name in sorted(datasets):
            data = f[name]
            values = np.ascontiguousarray(data[()])
            digest.update(name.encode())
            digest.update(str(data.dtype).encode())
            digest.update(repr(data.shape).encode())
            if values.dtype.kind == "O":  # variable-length strings
                for item in values.ravel():
                    digest.update(item if isinstance(item, bytes) else str(item).encode())
                    digest.update(b"\0")
            else:
                digest.update(values.tobytes())
    print(digest.hexdigest(), len(datasets))


if __name__ == "__main__":
    main(sys.argv[1])
