#!/usr/bin/env python3
"""How close t5edge's encoder states are to HF's, for docs/XXL.md.

    python bench/xxl/compare.py HF.npz LEN T5EDGE.npy [T5EDGE.npy ...]

HF.npz is what `hf_encode.py --save` wrote (`lenN`: [N, d_model]); each
T5EDGE.npy what `t5edge encode --input IDS.jsonl --output X.npy` wrote for
the same N ids ([1, N, d_model]). Prints, per file, the largest and mean
absolute difference, the states' largest and mean magnitude, and the
smallest per-token cosine similarity.
"""
import sys

import numpy as np


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    ref = np.load(sys.argv[1])[f"len{int(sys.argv[2])}"].astype(np.float64)
    for path in sys.argv[3:]:
        got = np.load(path).astype(np.float64).reshape(ref.shape)
        d = np.abs(got - ref)
        cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        print(f"{path}: max |diff| {d.max():.4g}, mean {d.mean():.4g}; "
              f"|states| max {np.abs(ref).max():.3g}, mean {np.abs(ref).mean():.3g}; "
              f"min cosine {cos.min():.6f}")


if __name__ == "__main__":
    main()
