"""Voxel arrays handed from the reference scripts to Pinhole's Rust tests.

`save(values, path)` writes the array flattened as given (callers pass i fastest):
- `path` ending in `.npy`: NumPy's .npy format in the narrowest dtype that holds every
  value exactly (uint8, int16, ..., float32, float64), so a 512x512x133 int16 CT costs
  70 MB of temporary disk instead of 279 MB as float64 (CI machines can be short of
  disk; tests/support/shared.rs `read_voxels` reads it back as f64);
- `-`: nothing is written (the caller only wants the JSON);
- anything else: raw little-endian float64.
"""
import numpy as np

EXACT_DTYPES = ["<u1", "<i1", "<u2", "<i2", "<u4", "<i4", "<f4", "<f8"]


def narrowest_exact(values):
    """The first dtype of EXACT_DTYPES that holds every value of `values` unchanged."""
    for dtype in EXACT_DTYPES:
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            if values.size and (not np.all(np.isfinite(values))
                                or values.min() < info.min or values.max() > info.max):
                continue
        cast = values.astype(dtype)
        if np.array_equal(cast.astype(np.float64), values, equal_nan=True):
            return cast
    return values.astype("<f8")


def save(values, path):
    flat = np.ascontiguousarray(np.asarray(values, dtype=np.float64).ravel())
    if path == "-":
        return
    if path.endswith(".npy"):
        np.save(path, narrowest_exact(flat), allow_pickle=False)
    else:
        flat.astype("<f8").tofile(path)
