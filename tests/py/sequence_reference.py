#!/usr/bin/env python3
"""Tracked ultrasound sequence files, independently of Pinhole (crates/io/src/sequence.rs).

  sequence_reference.py sitk PATH
      Reads PATH with SimpleITK (MetaImage) and prints JSON: size, spacing, pixel type,
      the pixels (frame after frame, row after row) and every metadata field
      (SimpleITK's GetMetaData: the per-frame Seq_FrameNNNN_* fields of a sequence).

  sequence_reference.py write OUT MODE
      Writes a small tracked sequence at OUT following the PLUS "Sequence file" format
      description (plain text header + numpy pixels, no imaging library) and prints JSON of
      what it wrote: width, height, orientation, and per frame the pixels, the timestamp
      and the transforms (row-major 4x4, status). MODE:
        mha          one file, ElementDataFile = LOCAL, raw, 16-number transforms
        mha-zlib     one file, CompressedData = True (zlib), CompressedDataSize,
                     12-number transforms, CRLF line ends
        mhd          header OUT + data file beside it (OUT with .raw)
        missing      like mha, but frame 2 has no ProbeToTracker transform at all and
                     frame 1's Needle transform is INVALID
        ushort       MET_USHORT, big-endian (BinaryDataByteOrderMSB = True)
        igs-nrrd     NRRD as PLUS/IGSIO writes it: kinds domain domain list, gzip,
                     Seq_Frame fields as key:=value
        slicer-nrrd  NRRD as Slicer's Sequences writes a volume sequence: kinds list
                     domain domain domain, sizes N W H 1 (frame index fastest), raw,
                     axis 0 index values as the only timing (no Seq_Frame fields)
"""
import json
import math
import os
import sys
import zlib
import gzip

import numpy as np

WIDTH, HEIGHT, FRAMES = 6, 4, 3


def rotation_z(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def sample_sequence(mode):
    rng = np.random.RandomState(20)
    dtype = np.uint16 if mode == "ushort" else np.uint8
    high = 65535 if dtype == np.uint16 else 255
    frames = []
    for f in range(FRAMES):
        pixels = rng.randint(0, high + 1, size=(HEIGHT, WIDTH)).astype(dtype)
        probe = np.eye(4)
        probe[:3, :3] = rotation_z(10.0 * f + 3.0)
        probe[:3, 3] = [12.5 + f, -40.25 * f, 101.0 / 3.0]
        # ImageToProbe: a calibration scales (0.2 mm pixels): not orthonormal.
        image = np.eye(4)
        image[:3, :3] = rotation_z(90.0) * 0.2
        image[:3, 3] = [-1.5, 2.0, 0.1]
        needle = np.eye(4)
        needle[:3, 3] = [f * 0.1, 0.3, -7.0]
        transforms = {
            "ProbeToTracker": (probe, "OK"),
            "ImageToProbe": (image, "OK"),
            "NeedleToTracker": (needle, "INVALID" if (mode == "missing" and f == 1) else "OK"),
        }
        if mode == "missing" and f == 2:
            del transforms["ProbeToTracker"]
        frames.append({"pixels": pixels, "timestamp": 1234.5678 + f / 30.0, "transforms": transforms})
    return dtype, frames


def fmt(x):
    return repr(float(x))


def matrix_text(m, numbers):
    return " ".join(fmt(v) for v in m.reshape(-1)[:numbers])


def frame_field_lines(frames, numbers, sep):
    lines = []
    for f, fr in enumerate(frames):
        p = "Seq_Frame%04d_" % f
        lines.append(p + "FrameNumber" + sep + str(100 + f))
        for name, (m, status) in fr["transforms"].items():
            lines.append(p + name + "Transform" + sep + matrix_text(m, numbers))
            lines.append(p + name + "TransformStatus" + sep + status)
        lines.append(p + "Timestamp" + sep + fmt(fr["timestamp"]))
        lines.append(p + "ImageStatus" + sep + "OK")
    return lines


def write(out, mode):
    dtype, frames = sample_sequence(mode)
    stack = np.stack([fr["pixels"] for fr in frames])  # frames, rows, columns
    big = mode == "ushort"
    raw = stack.astype(">u2" if big else stack.dtype.newbyteorder("<")).tobytes()
    timestamps = [fr["timestamp"] for fr in frames]
    if mode in ("mha", "mha-zlib", "mhd", "missing", "ushort"):
        compressed = mode == "mha-zlib"
        numbers = 12 if compressed else 16
        data = zlib.compress(raw) if compressed else raw
        lines = [
            "ObjectType = Image",
            "NDims = 3",
            "BinaryData = True",
            "BinaryDataByteOrderMSB = " + ("True" if big else "False"),
            "CompressedData = " + ("True" if compressed else "False"),
        ]
        if compressed:
            lines.append("CompressedDataSize = %d" % len(data))
        lines += [
            "TransformMatrix = 1 0 0 0 1 0 0 0 1",
            "Offset = 0 0 0",
            "CenterOfRotation = 0 0 0",
            "AnatomicalOrientation = RAI",
            "ElementSpacing = 0.2 0.25 1",
            "DimSize = %d %d %d" % (WIDTH, HEIGHT, FRAMES),
            "ElementType = " + ("MET_USHORT" if dtype == np.uint16 else "MET_UCHAR"),
            "UltrasoundImageOrientation = MF",
            "UltrasoundImageType = BRIGHTNESS",
        ]
        lines += frame_field_lines(frames, numbers, " = ")
        if mode == "mhd":
            data_name = os.path.basename(out).rsplit(".", 1)[0] + ".raw"
            lines.append("ElementDataFile = " + data_name)
            with open(os.path.join(os.path.dirname(out) or ".", data_name), "wb") as fh:
                fh.write(data)
            body = b""
        else:
            lines.append("ElementDataFile = LOCAL")
            body = data
        newline = "\r\n" if compressed else "\n"
        with open(out, "wb") as fh:
            fh.write((newline.join(lines) + newline).encode("ascii") + body)
        spacing = [0.2, 0.25]
    elif mode == "igs-nrrd":
        header = [
            "NRRD0004",
            "# Complete NRRD file format specification at:",
            "type: uint8",
            "dimension: 3",
            "space dimension: 2",
            "sizes: %d %d %d" % (WIDTH, HEIGHT, FRAMES),
            "kinds: domain domain list",
            "endian: little",
            "encoding: gz",
            "space directions: (0.3,0) (0,0.3) none",
            "space origin: (0,0)",
            "UltrasoundImageOrientation:=MF",
        ]
        header += frame_field_lines(frames, 16, ":=")
        with open(out, "wb") as fh:
            fh.write(("\n".join(header) + "\n\n").encode("ascii") + gzip.compress(raw))
        spacing = [0.3, 0.3]
    elif mode == "slicer-nrrd":
        # Frame index fastest: array (columns, rows... ) in NRRD axis order N, W, H, 1.
        interleaved = np.ascontiguousarray(stack.transpose(1, 2, 0))  # rows, columns, frames
        timestamps = [0.0, 0.5, 1.25]
        header = [
            "NRRD0004",
            "type: unsigned char",
            "dimension: 4",
            "space: right-anterior-superior",
            "sizes: %d %d %d 1" % (FRAMES, WIDTH, HEIGHT),
            "space directions: none (0.4,0,0) (0,0.4,0) (0,0,1)",
            "kinds: list domain domain domain",
            'labels: "time" "" "" ""',
            "endian: little",
            "encoding: raw",
            "space origin: (0,0,0)",
            "axis 0 index type:=numeric",
            "axis 0 index values:=" + " ".join(fmt(t) for t in timestamps),
            "DataNodeClassName:=vtkMRMLScalarVolumeNode",
        ]
        with open(out, "wb") as fh:
            fh.write(("\n".join(header) + "\n\n").encode("ascii") + interleaved.tobytes())
        for fr in frames:
            fr["transforms"] = {}
        spacing = [0.4, 0.4]
    else:
        raise SystemExit("unknown mode " + mode)
    report = {
        "width": WIDTH,
        "height": HEIGHT,
        "spacing": spacing,
        "orientation": None if mode == "slicer-nrrd" else "MF",
        "frames": [
            {
                "pixels": fr["pixels"].reshape(-1).tolist(),
                "timestamp": t,
                "transforms": {
                    name: {"matrix": m.tolist(), "status": status}
                    for name, (m, status) in fr["transforms"].items()
                },
            }
            for fr, t in zip(frames, timestamps)
        ],
    }
    print(json.dumps(report))


def sitk_read(path):
    import SimpleITK as sitk

    image = sitk.ReadImage(path)
    array = sitk.GetArrayFromImage(image)  # frames, rows, columns
    print(
        json.dumps(
            {
                "size": list(image.GetSize()),
                "spacing": list(image.GetSpacing()),
                "pixel_type": image.GetPixelIDTypeAsString(),
                "pixels": array.reshape(-1).tolist(),
                "metadata": {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()},
            }
        )
    )


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "sitk":
        sitk_read(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
