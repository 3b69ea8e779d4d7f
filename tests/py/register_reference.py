"""Independent references for pinhole-register's tests (numpy, scipy).

  similarity A.f32 B.f32 W H   -> {"ncc", "gradient_ncc"}: NCC and the mean NCC of the
                                  Sobel x/y gradients (scipy.ndimage.sobel, interior only)
  rotation RX RY RZ            -> {"matrix"}: scipy Rotation.from_euler("xyz", degrees)
                                  (extrinsic x, then y, then z: Rz @ Ry @ Rx)
"""
import json
import sys

import numpy as np


def ncc(a, b):
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def main():
    cmd = sys.argv[1]
    if cmd == "similarity":
        from scipy import ndimage

        w, h = int(sys.argv[4]), int(sys.argv[5])
        a = np.fromfile(sys.argv[2], dtype="<f4").reshape(h, w).astype(np.float64)
        b = np.fromfile(sys.argv[3], dtype="<f4").reshape(h, w).astype(np.float64)
        gx = [ndimage.sobel(x, axis=1)[1:-1, 1:-1] for x in (a, b)]
        gy = [ndimage.sobel(x, axis=0)[1:-1, 1:-1] for x in (a, b)]
        print(json.dumps({"ncc": ncc(a, b), "gradient_ncc": 0.5 * (ncc(*gx) + ncc(*gy))}))
    elif cmd == "rotation":
        from scipy.spatial.transform import Rotation

        angles = [float(v) for v in sys.argv[2:5]]
        m = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
        print(json.dumps({"matrix": m.tolist()}))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
