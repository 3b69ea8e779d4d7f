#!/usr/bin/env python3
"""Independent reference for Pinhole's DICOM series reader (pydicom).

Commands:
  series DIR OUT       read every DICOM file in DIR, sort along the slice normal, print
                       {"dims": [i, j, k], "matrix": 4x4 index->LPS, "slice_thickness"}
                       as JSON and write the voxels (k, j, i C-order, i fastest) after
                       pydicom's apply_modality_lut to OUT (voxel_file.py: OUT.npy in the
                       narrowest exact dtype, else little-endian float64).
  two_series SRC DST N UID_A UID_B
                       copy the DICOM files of SRC into DST with SeriesInstanceUID UID_A
                       for the first N (by name) and UID_B for the rest (the shared
                       series' own UID is empty); print {"series": {uid: slices}}.
  colour FILE OUT      one colour file (every frame) as pydicom shows it: RGB (pixel_array
                       converts YBR_FULL / YBR_FULL_422), a PALETTE COLOR index through
                       apply_color_lut; writes the samples (frame, row, column, R G B; C
                       order) to OUT (voxel_file.py); prints {"rows", "columns", "frames",
                       "bits", "min", "max"}.
  colour_nrrd FILE OUT.nrrd
                       OUT.nrrd (Pinhole's RGB NRRD of FILE) read by pynrrd against FILE's
                       colour as above; prints {"kinds", "type", "space", "sizes",
                       "worst": max |difference|}.
  jpegls_colour DST    colour images encoded by CharLS (pyjpegls) into DST/NAME/image.dcm,
                       RGB secondary captures: pydicom's examples_rgb_color.dcm picture and
                       a constructed image (flat blocks for run mode, noise, edges) in
                       every interleave mode (0 by plane, 1 by line, 2 by pixel),
                       lossless and NEAR 3, 8 bits; and 12-bit noise by line and by pixel;
                       print {"names": [...]}.
  testfile NAME        print the path of one of pydicom's bundled test files.
  make_jpeg OUT.dcm    write a monochrome 8-bit JPEG baseline (1.2.840.10008.1.2.4.50)
                       file made from pydicom's MR_small.dcm with Pillow's encoder.
  xray OUT.dcm W H [FRAMES]
                       write a 16-bit MONOCHROME2 XA image (FRAMES > 1: multi-frame,
                       frame f adding 1000 f) whose pixel (c, r) of frame 0 is
                       7*c + 300*r + 5 stored, RescaleSlope 2, RescaleIntercept -10; print
                       {"first": [...], "last": ...} of frame 0's rescaled values
                       (pydicom's pixel_array and apply_modality_lut).
  xa_cine OUT.dcm OUT.f64 W H FRAMES SPACING [SOURCE.nii [SID,SOD,LAO,CRAN]]
                       write a multi-frame 16-bit MONOCHROME2 XA cine with the X-ray
                       geometry tags (DistanceSourceToDetector SID, DistanceSourceToPatient
                       SOD, ImagerPixelSpacing SPACING as "row\\col", PositionerPrimaryAngle
                       LAO, PositionerSecondaryAngle CRAN; default 1020.5, 765.25, 12.5,
                       -5), RescaleSlope 2, RescaleIntercept -10. Frame f holds pseudo-
                       random stored values (seed f); with SOURCE.nii (a 2-D NIfTI, i =
                       column, as `pinhole drr --out-raw` writes) frame 1 holds it scaled
                       to 0..4000 instead. Writes every frame's rescaled values (pydicom's pixel_array
                       and apply_modality_lut; frame, row, column, C order) as little-endian
                       float64 to OUT.f64; prints the tags as pydicom reads them back.
  jpegls SRC DST NEAR  every DICOM file of SRC rewritten in JPEG-LS by CharLS (pyjpegls):
                       lossless (1.2.840.10008.1.2.4.80) for NEAR 0, else near-lossless
                       (.81) with that NEAR, the codestream's precision = BitsStored;
                       print {"written": n, "worst_error": max |stored - original|}.
  jpegls_patterns DST  constructed images that reach the corners of the JPEG-LS coder,
                       each encoded by CharLS into DST/NAME/image.dcm (one folder per
                       image): uniform 16-bit noise (escape codes), a 40000-column flat
                       image (run segments up to 2^15), one column, one row, 2- and 4-bit
                       precision (the low-MAXVAL thresholds), near-lossless 8 and 12 bits;
                       print {"names": [...]}.
"""

import io
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

import voxel_file


def is_dicom(path):
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def series(folder, out_path):
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    datasets = [pydicom.dcmread(os.path.join(folder, n)) for n in names
                if is_dicom(os.path.join(folder, n))]
    first = datasets[0]
    iop = [float(x) for x in first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    row = np.array(iop[:3])
    col = np.array(iop[3:])
    row /= np.linalg.norm(row)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)

    def position(ds):
        return np.array([float(x) for x in ds.get("ImagePositionPatient", [0, 0, 0])])

    # Planes: (position, values). An RT Dose grid's frames are placed by its
    # GridFrameOffsetVector (relative to the position along the normal when its first
    # value is 0, else absolute z; PS3.3 C.8.8.3.2) and scaled by DoseGridScaling.
    planes = []
    for ds in datasets:
        values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
        if ds.get("Modality") == "RTDOSE" and "DoseGridScaling" in ds and "RescaleSlope" not in ds:
            values = values * float(ds.DoseGridScaling)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1 and "GridFrameOffsetVector" in ds:
            offsets = [float(v) for v in ds.GridFrameOffsetVector]
            for k, offset in enumerate(offsets):
                if offsets[0] == 0:
                    where = position(ds) + offset * normal
                else:
                    where = np.array([position(ds)[0], position(ds)[1], offset])
                planes.append((where, values[k]))
        else:
            planes.append((position(ds), values))
    planes.sort(key=lambda p: float(p[0] @ normal))
    distances = [float(p[0] @ normal) for p in planes]
    if len(planes) > 1:
        dz = (distances[-1] - distances[0]) / (len(planes) - 1)
    else:
        # The first of SpacingBetweenSlices and SliceThickness that holds a value, else
        # 1 mm (present but empty counts as absent, as in Pinhole's reader).
        given = [first.get(k) for k in ("SpacingBetweenSlices", "SliceThickness")]
        dz = next((float(v) for v in given if v not in (None, "")), 1.0)
    spacing = [float(x) for x in first.get("PixelSpacing", [1.0, 1.0])]
    matrix = np.eye(4)
    matrix[:3, 0] = row * spacing[1]
    matrix[:3, 1] = col * spacing[0]
    matrix[:3, 2] = normal * dz
    matrix[:3, 3] = planes[0][0]
    volume = np.stack([p[1] for p in planes])
    voxel_file.save(volume, out_path)
    thickness = first.get("SliceThickness")
    print(json.dumps({
        "dims": [int(first.Columns), int(first.Rows), len(planes)],
        "matrix": matrix.tolist(),
        "slice_thickness": None if thickness is None else float(thickness),
        "slice_spacing": dz,
    }))


def colour(path, out_path):
    ds = pydicom.dcmread(path)
    rgb = colour_rgb(ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        rgb = rgb[None]
    assert rgb.shape == (frames, int(ds.Rows), int(ds.Columns), 3), rgb.shape
    voxel_file.save(np.asarray(rgb, dtype=np.float64), out_path)
    print(json.dumps({"rows": int(ds.Rows), "columns": int(ds.Columns), "frames": frames,
                      "bits": int(rgb.dtype.itemsize * 8), "min": float(rgb.min()),
                      "max": float(rgb.max())}))


def colour_rgb(ds):
    from pydicom.pixels import apply_color_lut

    rgb = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = apply_color_lut(rgb, ds)
    return rgb


def colour_nrrd(path, nrrd_path):
    import nrrd

    ds = pydicom.dcmread(path)
    rgb = colour_rgb(ds).astype(np.float64)
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        rgb = rgb[None]
    data, fields = nrrd.read(nrrd_path)  # [c, i, j, k]
    ours = np.transpose(np.asarray(data, dtype=np.float64), (3, 2, 1, 0))
    print(json.dumps({
        "kinds": list(fields["kinds"]), "type": fields["type"], "space": fields["space"],
        "sizes": [int(v) for v in fields["sizes"]],
        "worst": float(np.max(np.abs(ours - rgb))) if ours.shape == rgb.shape else None,
    }))


def jpegls_colour(dst):
    import jpeg_ls
    from pydicom.encaps import encapsulate

    picture = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm")).pixel_array
    rng = np.random.default_rng(24)
    rows, columns = 37, 53  # odd sizes: no line length is a power of two
    constructed = np.zeros((rows, columns, 3), dtype=np.uint8)
    constructed[:, :20] = (200, 30, 90)  # flat: run mode across whole pixels
    constructed[5:30, 20:40] = rng.integers(0, 256, (25, 20, 3))  # noise: regular mode
    constructed[:, 40:] = np.arange(columns - 40, dtype=np.uint8)[None, :, None] * 7
    constructed[20:, :20, 1] = 31  # one component changes: run interruption
    noise12 = rng.integers(0, 4096, (19, 23, 3)).astype(np.uint16)
    noise12[:, :8] = 4095  # a flat band at full scale
    cases = []
    for name, image, bits in (("picture", picture, 8), ("constructed", constructed, 8)):
        for ilv in (0, 1, 2):
            for near in (0, 3):
                cases.append((f"{name}_ilv{ilv}_near{near}", image, bits, ilv, near))
    cases += [("noise12_ilv1_near0", noise12, 12, 1, 0), ("noise12_ilv2_near2", noise12, 12, 2, 2)]
    names = []
    for name, image, bits, ilv, near in cases:
        rows, columns = image.shape[:2]
        dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
        arranged = image.astype(dtype)
        if ilv == 0:
            arranged = np.transpose(arranged, (2, 0, 1))  # plane by plane
        # pyjpegls takes interleave mode 1 and 2 input by pixel (it arranges the lines).
        codestream = jpeg_ls.encode_buffer(np.ascontiguousarray(arranged).tobytes(), rows,
                                           columns, 3, bits, lossy_error=near,
                                           interleave_mode=ilv)
        ds = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm"))
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated = 8 if bits <= 8 else 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PlanarConfiguration = 0
        ds.PixelData = encapsulate([bytes(codestream)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.JPEGLSLossless if near == 0
                                          else pydicom.uid.JPEGLSNearLossless)
        folder = os.path.join(dst, name)
        os.makedirs(folder, exist_ok=True)
        ds.save_as(os.path.join(folder, "image.dcm"), enforce_file_format=True)
        # CharLS reads back what it wrote, within NEAR of the source.
        back = pydicom.dcmread(os.path.join(folder, "image.dcm")).pixel_array
        assert np.max(np.abs(back.astype(int) - image.astype(int))) <= near, name
        names.append(name)
    print(json.dumps({"names": names}))


def two_series(src, dst, count, uid_a, uid_b):
    names = sorted(n for n in os.listdir(src) if is_dicom(os.path.join(src, n)))
    counts = {}
    for index, name in enumerate(names):
        ds = pydicom.dcmread(os.path.join(src, name))
        ds.SeriesInstanceUID = uid_a if index < int(count) else uid_b
        ds.save_as(os.path.join(dst, name), enforce_file_format=True)
        counts[str(ds.SeriesInstanceUID)] = counts.get(str(ds.SeriesInstanceUID), 0) + 1
    print(json.dumps({"series": counts}))


def make_jpeg(out_path):
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.pixel_array.astype(np.float64)
    pixels = np.round(255 * (pixels - pixels.min()) / (pixels.max() - pixels.min()))
    pixels = pixels.astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(out_path, enforce_file_format=True)


def xray(out, w, h, frames):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    c, r = np.meshgrid(np.arange(w), np.arange(h))
    stored = np.stack([(7 * c + 300 * r + 5 + 1000 * f) for f in range(frames)])
    stored = stored.astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"  # XA
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(out, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "XA"
    ds.Rows, ds.Columns = h, w
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -10
    ds.PixelData = stored.tobytes()
    ds.save_as(out, enforce_file_format=True)
    read = pydicom.dcmread(out)
    pixels = read.pixel_array
    first = pixels[0] if frames > 1 else pixels
    values = apply_modality_lut(first, read).astype(np.float64)
    print(json.dumps({"first": values[0, :3].tolist(), "last": float(values[-1, -1])}))


def xa_cine(out, raw_out, w, h, frames, spacing, source=None, geometry=None):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = np.stack(
        [np.random.default_rng(f).integers(0, 4000, size=(h, w)) for f in range(frames)]
    )
    if source is not None:
        import nibabel

        image = np.asarray(nibabel.load(source).dataobj, dtype=np.float64)
        image = image.reshape(image.shape[0], image.shape[1]).T  # (row, column)
        span = max(float(image.max() - image.min()), 1e-12)
        stored[1] = np.round((image - image.min()) / span * 4000.0)
    stored = stored.astype(np.uint16)
    sid, sod, lao, cran = (geometry or "1020.5,765.25,12.5,-5").split(",")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"  # XA
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(out, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "XA"
    ds.Rows, ds.Columns = h, w
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -10
    ds.DistanceSourceToDetector = sid
    ds.DistanceSourceToPatient = sod
    ds.ImagerPixelSpacing = spacing.split("\\")
    ds.PositionerPrimaryAngle = lao
    ds.PositionerSecondaryAngle = cran
    ds.PixelData = stored.tobytes()
    ds.save_as(out, enforce_file_format=True)
    read = pydicom.dcmread(out)
    values = apply_modality_lut(read.pixel_array, read).astype("<f8")
    values.tofile(raw_out)
    print(
        json.dumps(
            {
                "frames": int(read.NumberOfFrames),
                "rows": int(read.Rows),
                "columns": int(read.Columns),
                "sid_mm": float(read.DistanceSourceToDetector),
                "sod_mm": float(read.DistanceSourceToPatient),
                "imager_pixel_spacing_mm": [float(v) for v in read.ImagerPixelSpacing],
                "primary_deg": float(read.PositionerPrimaryAngle),
                "secondary_deg": float(read.PositionerSecondaryAngle),
            }
        )
    )


def deflate(src, dst):
    """Every DICOM file of src rewritten by pydicom in Deflated Explicit VR Little Endian
    (PS3.5 A.5: the data set raw-deflated after the file meta group) into dst; compressed
    pixel data is decompressed first."""
    os.makedirs(dst, exist_ok=True)
    written = 0
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if not is_dicom(path):
            continue
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()  # native pixels first: deflate carries native pixel data
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        ds.save_as(os.path.join(dst, name), enforce_file_format=True)
        check = pydicom.dcmread(os.path.join(dst, name))
        assert check.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
        written += 1
    print(json.dumps({"written": written}))


def encapsulate_jpegls(ds, pixels, bits_stored, near):
    """ds's pixel data replaced by CharLS's JPEG-LS encoding of the unsigned `pixels`."""
    import jpeg_ls
    from pydicom.encaps import encapsulate

    rows, columns = pixels.shape
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    codestream = jpeg_ls.encode_buffer(
        np.ascontiguousarray(pixels.astype(dtype)).tobytes(), rows, columns, 1,
        bits_stored, lossy_error=near)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([bytes(codestream)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = (pydicom.uid.JPEGLSLossless if near == 0
                                      else pydicom.uid.JPEGLSNearLossless)
    if near:
        ds.LossyImageCompression = "01"


def jpegls(src, dst, near):
    os.makedirs(dst, exist_ok=True)
    written, worst = 0, 0
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if not is_dicom(path):
            continue
        ds = pydicom.dcmread(path)
        original = ds.pixel_array.astype(np.int64)
        assert int(ds.PixelRepresentation) == 0, "unsigned stored values expected"
        encapsulate_jpegls(ds, original, int(ds.BitsStored), near)
        out = os.path.join(dst, name)
        ds.save_as(out, enforce_file_format=True)
        back = pydicom.dcmread(out).pixel_array.astype(np.int64)
        worst = max(worst, int(np.abs(back - original).max()))
        written += 1
    print(json.dumps({"written": written, "worst_error": worst}))


def jpegls_patterns(dst):
    rng = np.random.default_rng(24)
    flat = np.full((3, 40000), 7)
    flat[2, -1] = 9
    smooth = np.add.outer(np.arange(48) * 40, np.arange(64) * 25) % 4096
    patterns = {
        "noise16": (rng.integers(0, 65536, (23, 37)), 16, 0),
        "flat_wide": (flat, 16, 0),
        "one_column": (rng.integers(0, 256, (50, 1)), 8, 0),
        "one_row": (rng.integers(0, 256, (1, 50)), 8, 0),
        "two_bits": (rng.integers(0, 4, (30, 31)), 2, 0),
        "four_bits_near1": (rng.integers(0, 16, (30, 31)), 4, 1),
        "smooth12_near5": ((smooth + rng.integers(0, 30, smooth.shape)) % 4096, 12, 5),
        "blocks8_near2": (np.kron(rng.integers(0, 256, (6, 6)), np.ones((9, 11))), 8, 2),
    }
    template = get_testdata_file("MR_small.dcm")
    for name, (pixels, bits, near) in patterns.items():
        ds = pydicom.dcmread(template)
        encapsulate_jpegls(ds, pixels, bits, near)
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        os.makedirs(os.path.join(dst, name), exist_ok=True)
        ds.save_as(os.path.join(dst, name, "image.dcm"), enforce_file_format=True)
    print(json.dumps({"names": list(patterns)}))


def main():
    command = sys.argv[1]
    if command == "series":
        series(sys.argv[2], sys.argv[3])
    elif command == "testfile":
        path = get_testdata_file(sys.argv[2])
        if path is None:
            sys.exit(f"pydicom has no test file {sys.argv[2]}")
        print(path)
    elif command == "jpegls_colour":
        jpegls_colour(sys.argv[2])
    elif command == "colour":
        colour(sys.argv[2], sys.argv[3])
    elif command == "colour_nrrd":
        colour_nrrd(sys.argv[2], sys.argv[3])
    elif command == "two_series":
        two_series(*sys.argv[2:7])
    elif command == "jpegls":
        jpegls(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif command == "jpegls_patterns":
        jpegls_patterns(sys.argv[2])
    elif command == "deflate":
        deflate(sys.argv[2], sys.argv[3])
    elif command == "make_jpeg":
        make_jpeg(sys.argv[2])
    elif command == "xray":
        frames = int(sys.argv[5]) if len(sys.argv) > 5 else 1
        xray(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), frames)
    elif command == "xa_cine":
        w, h, frames = (int(v) for v in sys.argv[4:7])
        source = sys.argv[8] if len(sys.argv) > 8 else None
        geometry = sys.argv[9] if len(sys.argv) > 9 else None
        xa_cine(sys.argv[2], sys.argv[3], w, h, frames, sys.argv[7], source, geometry)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
