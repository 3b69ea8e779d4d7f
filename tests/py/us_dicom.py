#!/usr/bin/env python3
"""Ultrasound DICOM files for Pinhole's frame reader tests (pydicom).

  us_dicom.py frames OUT.dcm PHOTOMETRIC W H FRAMES [BITS] [CLAIMED_FRAMES] [MODALITY] [jpegls]
      write a multi-frame (NumberOfFrames FRAMES, or CLAIMED_FRAMES when given > 0)
      native explicit-VR little-endian image, PHOTOMETRIC MONOCHROME2 or RGB
      (interleaved), BITS 8 (default) or 16, with a Sequence of Ultrasound Regions
      (PhysicalDeltaX 0.02 cm, PhysicalDeltaY 0.03 cm). Sample values:
        grey  (5c + 17r + 31f) mod 256
        RGB   R (3c + 11r + 40f) mod 256, G (7c + 5r + 13f) mod 256, B (c·r + 29f) mod 256
      pydicom's own decoding (pixel_array: frames × rows × columns [× 3], uint8) goes to
      OUT.dcm.raw when the file is consistent; prints {"raw": path or null}. With
      `jpegls` the pixel data is JPEG-LS lossless (CharLS through pyjpegls), a fragment
      per frame.

  us_dicom.py pydicom-luma NAME OUT.raw
      one of pydicom's bundled test files (PALETTE COLOR or RGB): pydicom's decoding
      (pixel_array; a palette through apply_color_lut, its 16-bit entries cut to their
      high byte) as Rec. 601 luminance 0.299 R + 0.587 G + 0.114 B in float32, rounded
      half up, to OUT.raw (frames x rows x columns, uint8); prints {"path", "frames",
      "rows", "columns", "photometric"}.
"""

import json
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def samples(photometric, w, h, frames):
    c, r = np.meshgrid(np.arange(w), np.arange(h))
    out = []
    for f in range(frames):
        if photometric == "RGB":
            red = (3 * c + 11 * r + 40 * f) % 256
            green = (7 * c + 5 * r + 13 * f) % 256
            blue = (c * r + 29 * f) % 256
            out.append(np.stack([red, green, blue], axis=-1))
        else:
            out.append((5 * c + 17 * r + 31 * f) % 256)
    return np.stack(out)


def frames(out, photometric, w, h, count, bits=8, claimed=0, modality="US", compress=""):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # US multi-frame
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(out, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = h, w
    ds.NumberOfFrames = claimed if claimed > 0 else count
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = w - 1, h - 1
    region.PhysicalUnitsXDirection = 3
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = 0.02
    region.PhysicalDeltaY = 0.03
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    values = samples(photometric, w, h, count)
    ds.PixelData = values.astype(np.uint16 if bits == 16 else np.uint8).tobytes()
    if compress == "jpegls":
        ds.compress(pydicom.uid.JPEGLSLossless, generate_instance_uid=False)
    ds.save_as(out, enforce_file_format=True)
    raw = None
    if claimed <= 0 and bits == 8:
        decoded = pydicom.dcmread(out).pixel_array
        raw = out + ".raw"
        decoded.astype(np.uint8).tofile(raw)
    print(json.dumps({"raw": raw}))


def pydicom_luma(name, out):
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut

    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        if rgb.dtype == np.uint16:
            rgb = (rgb >> 8).astype(np.uint8)
    else:
        rgb = pixels
    if frames == 1:
        rgb = rgb[None]
    r, g, b = (rgb[..., k].astype(np.float32) for k in range(3))
    y = np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b
    np.clip(np.floor(y + np.float32(0.5)), 0, 255).astype(np.uint8).tofile(out)
    print(json.dumps({"path": path, "frames": frames, "rows": int(ds.Rows),
                      "columns": int(ds.Columns),
                      "photometric": str(ds.PhotometricInterpretation)}))


def main():
    command = sys.argv[1]
    if command == "pydicom-luma":
        pydicom_luma(sys.argv[2], sys.argv[3])
    elif command == "frames":
        args = sys.argv[2:]
        bits = int(args[5]) if len(args) > 5 else 8
        claimed = int(args[6]) if len(args) > 6 else 0
        modality = args[7] if len(args) > 7 else "US"
        compress = args[8] if len(args) > 8 else ""
        frames(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), bits, claimed,
               modality, compress)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
