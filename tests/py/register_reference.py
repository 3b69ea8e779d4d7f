"""Independent references for pinhole-register's tests (numpy, scipy, pydicom).

  similarity A.f32 B.f32 W H   -> {"ncc", "gradient_ncc"}: NCC and the mean NCC of the
                                  Sobel x/y gradients (scipy.ndimage.sobel, interior only)
  rotation RX RY RZ            -> {"matrix"}: scipy Rotation.from_euler("xyz", degrees)
                                  (extrinsic x, then y, then z: Rz @ Ry @ Rx)
  dicom OUT.dcm W H            -> writes a 16-bit MONOCHROME2 XA image whose pixel (c, r)
                                  is 7*c + 300*r + 5 stored, RescaleSlope 2, Intercept -10;
                                  prints {"first": [...], "last": ...} of the rescaled values
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
    elif cmd == "dicom":
        import pydicom
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        out, w, h = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        c, r = np.meshgrid(np.arange(w), np.arange(h))
        stored = (7 * c + 300 * r + 5).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"  # XA
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(out, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "XA"
        ds.Rows, ds.Columns = h, w
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -10
        ds.PixelData = stored.tobytes()
        ds.save_as(out, enforce_file_format=True)
        values = pydicom.dcmread(out).pixel_array.astype(np.float64) * 2 - 10
        print(json.dumps({"first": values[0, :3].tolist(), "last": float(values[-1, -1])}))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
