#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/<target>/ (small files, a few KiB each).

Run from the repository root with ../shared/data beside it:  python3 fuzz/make_seeds.py
Needs pydicom, nibabel and numpy (tests/py/requirements.txt). Seeds come from the
shared data (real headers, cropped or cut short; the golden OpenIGTLink messages) and
from small hand-written files. Deterministic: running it twice gives the same bytes.
"""

import copy
import glob
import gzip
import io
import json
import os
import struct
import sys
import zlib

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless,
                         JPEGLSNearLossless, RLELossless)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

DICOM_SEPARATOR = b"SLICE-->"
NRRD_SEPARATOR = b"DATA--->"


def put(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def gz(data):
    # mtime=0: the same bytes on every run.
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as f:
        f.write(data)
    return out.getvalue()


# ------------------------------------------------------------------ DICOM
def ct_slices():
    return sorted(glob.glob(os.path.join(SHARED, "dicom-ct-series", "CT.*")))


def small_slice(path, size, z_mm, strip=False, syntax=ExplicitVRLittleEndian, y_mm=-437.51171875):
    """The real header of `path`, pixel data replaced by a size x size ramp."""
    ds = pydicom.dcmread(path)
    if strip:
        for elem in list(ds):
            if elem.tag.is_private or elem.VR == "SQ":
                del ds[elem.tag]
    ds.Rows = size
    ds.Columns = size
    ds.ImagePositionPatient = [-249.51171875, y_mm, z_mm]
    ds.SliceLocation = z_mm
    pixels = (np.arange(size * size, dtype=np.uint16).reshape(size, size) * 37) % 2461
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = pixels.tobytes()
    if syntax == RLELossless:
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    elif syntax in (JPEGLSLossless, JPEGLSNearLossless):
        near = 2 if syntax == JPEGLSNearLossless else 0
        ds.compress(syntax, pixels, generate_instance_uid=False, jls_error=near)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def enhanced_ct(slices):
    """A Legacy Converted Enhanced CT (highdicom) of small slices (bytes each): one file,
    geometry and rescale in per-frame and shared functional groups."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    datasets = [pydicom.dcmread(io.BytesIO(b)) for b in slices]
    root = "1.2.826.0.1.3680043.8.498.77"  # fixed UIDs: the same seed on every run
    study, series, frame_of_reference = f"{root}.1", f"{root}.2", f"{root}.3"
    for n, ds in enumerate(datasets):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = f"{root}.10.{n + 1}"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame_of_reference
    image = LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets, series_instance_uid=f"{root}.4", series_number=901,
        sop_instance_uid=f"{root}.5", instance_number=1)
    out = io.BytesIO()
    image.save_as(out, enforce_file_format=True)
    return out.getvalue()


def segmentation(slices, kind):
    """A highdicom Segmentation of small slices (bytes each): segment 1 a box over all
    slices, segment 2 a smaller box inside it on the middle one (overlap)."""
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept

    datasets = [pydicom.dcmread(io.BytesIO(b)) for b in slices]
    root = "1.2.826.0.1.3680043.8.498.78"
    for n, ds in enumerate(datasets):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = f"{root}.10.{n + 1}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
            f"{root}.1", f"{root}.2", f"{root}.3")
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    masks = np.zeros((len(datasets), rows, columns, 2), dtype=np.uint8)
    masks[:, 4:12, 3:13, 0] = 1
    masks[1, 6:9, 6:9, 1] = 1
    organ = CodedConcept("123037004", "SCT", "Anatomical Structure")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label, segmented_property_category=organ,
            segmented_property_type=CodedConcept(value, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n, label, value, meaning in ((1, "liver", "10200004", "Liver"),
                                         (2, "liver_tumor", "108369006", "Neoplasm"))
    ]
    fractional = kind == "FRACTIONAL"
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=masks.astype(np.float32) * 0.75 if fractional else masks,
        segmentation_type=hd.seg.SegmentationTypeValues[kind],
        segment_descriptions=descriptions, series_instance_uid=f"{root}.4", series_number=77,
        sop_instance_uid=f"{root}.5", instance_number=1, manufacturer="fuzz seed",
        manufacturer_model_name="seed", software_versions="1", device_serial_number="1",
        **({"max_fractional_value": 255} if fractional else {}))
    out = io.BytesIO()
    seg.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicom_seeds():
    files = ct_slices()
    first = files[0]
    with open(first, "rb") as f:
        real = f.read()
    one = small_slice(first, 16, -766.5)
    put("dicom_file", "ct_16x16_explicit_le.dcm", one)
    put("dicom_file", "ct_16x16_implicit_le.dcm", small_slice(first, 16, -766.5, syntax=ImplicitVRLittleEndian))
    put("dicom_file", "ct_16x16_rle.dcm", small_slice(first, 16, -766.5, syntax=RLELossless))
    put("dicom_file", "ct_header_jpeg2000_cut_4k.dcm", real[:4096])
    # An RT Dose grid: 15 frames placed by GridFrameOffsetVector, scaled by DoseGridScaling.
    from pydicom.data import get_testdata_file
    with open(get_testdata_file("rtdose.dcm"), "rb") as f:
        put("dicom_file", "rtdose_15_frames.dcm", f.read())
    # Colour (`dicom::colour`): native RGB, JPEG baseline YBR_FULL, RLE RGB 8 and 16 bits.
    for name in ("SC_rgb_small_odd.dcm", "SC_rgb_small_odd_jpeg.dcm", "SC_rgb_rle.dcm",
                 "SC_rgb_rle_16bit.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        with open(get_testdata_file(name), "rb") as f:
            put("dicom_file", "colour_" + name, f.read())
    put("dicom_file", "ct_16x16_jpegls.dcm", small_slice(first, 16, -766.5, syntax=JPEGLSLossless))
    put("dicom_file", "ct_16x16_jpegls_near2.dcm", small_slice(first, 16, -766.5, syntax=JPEGLSNearLossless))
    three = [small_slice(p, 8, z) for p, z in zip(files, (-766.5, -763.5, -760.5))]
    put("dicom_file", "enhanced_ct_3x8x8.dcm", enhanced_ct(three))
    for fixture in sorted(glob.glob(os.path.join(ROOT, "crates", "io", "tests", "fixtures", "*.dcm"))):
        put("dicom_file", os.path.basename(fixture), open(fixture, "rb").read())

    # The de-identifier reads whole files: a stripped slice, and a full header with its
    # sequences and private tags (what it removes, empties and replaces).
    put("dicom_deidentify", "ct_16x16_explicit_le.dcm", one)
    put("dicom_deidentify", "ct_header_jpeg2000_cut_4k.dcm", real[:4096])

    put("xray_image", "ct_16x16_explicit_le.dcm", one)
    put("xray_image", "ct_16x16_rle.dcm", small_slice(first, 16, -766.5, syntax=RLELossless))

    # Series: three stripped slices 3 mm apart, a two-slice RLE series, and a series of
    # three full headers (sequences and private tags kept) with an uneven gap.
    stripped = [small_slice(p, 8, z, strip=True) for p, z in zip(files, (-766.5, -763.5, -760.5))]
    put("dicom_series", "three_slices_explicit_le", DICOM_SEPARATOR.join(stripped))
    rle = [small_slice(p, 8, z, strip=True, syntax=RLELossless) for p, z in zip(files, (-766.5, -763.5))]
    put("dicom_series", "two_slices_rle", DICOM_SEPARATOR.join(rle))
    jls = [small_slice(p, 8, z, strip=True, syntax=JPEGLSLossless) for p, z in zip(files, (-766.5, -763.5))]
    put("dicom_series", "two_slices_jpegls", DICOM_SEPARATOR.join(jls))
    jpegls_seeds()
    full = [small_slice(p, 4, z) for p, z in zip(files, (-766.5, -763.5))]
    put("dicom_series", "two_full_headers", DICOM_SEPARATOR.join(full))
    uneven = [small_slice(p, 4, z, strip=True) for p, z in zip(files, (-766.5, -763.5, -757.5))]
    put("dicom_series", "three_slices_uneven", DICOM_SEPARATOR.join(uneven))
    put("dicom_series", "enhanced_ct_3x8x8", enhanced_ct(three))
    small = [small_slice(p, 16, z) for p, z in zip(files, (-766.5, -763.5, -760.5))]
    put("dicom_seg_input", "binary_two_segments_16x16.dcm", segmentation(small, "BINARY"))
    put("dicom_seg_input", "fractional_two_segments_16x16.dcm", segmentation(small, "FRACTIONAL"))
    # Positions drifting along y by 1.3 mm per 3 mm of feed: a gantry tilt, resampled.
    tilted = [small_slice(p, 8, z, strip=True, y_mm=-437.5 + 1.3 * n)
              for n, (p, z) in enumerate(zip(files, (-766.5, -763.5, -760.5)))]
    put("dicom_series", "three_slices_tilted", DICOM_SEPARATOR.join(tilted))
    put("dicom_series", "one_slice_and_a_cut_header", stripped[0] + DICOM_SEPARATOR + real[:2048])


def jpegls_seeds():
    """Raw JPEG-LS codestreams (CharLS through pyjpegls): noise (escape codes), flat
    runs, a ramp near-lossless, 2-bit precision."""
    import jpeg_ls

    rng = np.random.default_rng(7)
    images = {
        "noise16_9x7": (rng.integers(0, 65536, (7, 9)).astype(np.uint16), 16, 0),
        "flat_runs_40x3": (np.kron([[5], [5], [6]], np.ones((1, 40))).astype(np.uint8), 8, 0),
        "ramp12_near3_16x16": ((np.arange(256).reshape(16, 16) * 13 % 4096).astype(np.uint16), 12, 3),
        "two_bits_8x8": (rng.integers(0, 4, (8, 8)).astype(np.uint8), 2, 0),
    }
    for name, (pixels, bits, near) in images.items():
        rows, columns = pixels.shape
        data = jpeg_ls.encode_buffer(pixels.tobytes(), rows, columns, 1, bits, lossy_error=near)
        put("dicom_jpegls", name + ".jls", bytes(data))
    # Colour: three components by plane (three scans), by line and by pixel.
    rgb = np.random.default_rng(24).integers(0, 256, (6, 7, 3)).astype(np.uint8)
    rgb[:, :3] = (10, 20, 30)  # flat pixels: run mode over whole pixels
    for ilv in (0, 1, 2):
        arranged = np.transpose(rgb, (2, 0, 1)) if ilv == 0 else rgb
        data = jpeg_ls.encode_buffer(np.ascontiguousarray(arranged).tobytes(), 6, 7, 3, 8,
                                     interleave_mode=ilv)
        put("dicom_jpegls", f"rgb_ilv{ilv}_7x6.jls", bytes(data))


# ------------------------------------------------------------------ NIfTI / NRRD / PNG
def nifti_seeds():
    img = nib.load(os.path.join(SHARED, "abdomen-ct", "example_ct_sm.nii.gz"))
    data = np.asarray(img.dataobj)[40:44, 40:44, 10:12].astype(np.int16)
    small = nib.Nifti1Image(data, img.affine, img.header)
    small.set_data_dtype(np.int16)
    one = small.to_bytes()
    put("nifti", "abdomen_4x4x2.nii", one)
    put("nifti", "abdomen_4x4x2.nii.gz", gz(one))
    two = nib.Nifti2Image(data, img.affine)
    put("nifti", "abdomen_4x4x2_nifti2.nii", two.to_bytes())
    put("nifti", "abdomen_header_cut.nii", one[:352])
    flat = nib.Nifti1Image(np.asarray(img.dataobj)[40:48, 40:48, 10].astype(np.int16), img.affine)
    put("xray_image", "slice_8x8.nii", flat.to_bytes())


def png_bytes(width, height, bit_depth, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def xray_png_seeds():
    put("xray_image", "grey8_8x8.png", png_bytes(8, 8, 8, [bytes((x * 32 + y) % 256 for x in range(8)) for y in range(8)]))
    put("xray_image", "grey16_8x8.png", png_bytes(8, 8, 16, [b"".join(struct.pack(">H", x * 4000 + y) for x in range(8)) for y in range(8)]))


def us_frame_seeds():
    """Ultrasound frames: grey and RGB PNG, a 2-D u8 NIfTI with an oblique affine, and
    multi-frame DICOM US (RGB with an ultrasound region, MONOCHROME2, YBR_FULL_422)."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence

    put("us_frame", "grey8_8x6.png", png_bytes(8, 6, 8, [bytes((x * 30 + y * 7) % 256 for x in range(8)) for y in range(6)]))
    rgb = png_bytes(4, 4, 8, [bytes((x * 60 + c * 20 + y) % 256 for x in range(4) for c in range(3)) for y in range(4)])
    # The same IDAT read as colour type 2 (RGB) of 4 pixels a row: patch IHDR (colour type, CRC).
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    rgb = rgb[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF) + rgb[33:]
    put("us_frame", "rgb8_4x4.png", rgb)
    affine = np.array([[0.0, 0.0, 2.0, 10.0], [0.5, 0.0, 0.0, -20.0], [0.0, -0.8, 0.0, 30.0], [0, 0, 0, 1]])
    frame = nib.Nifti1Image((np.arange(48) % 256).astype(np.uint8).reshape(8, 6, 1), affine)
    put("us_frame", "oblique_8x6.nii", frame.to_bytes())

    def us(photometric, samples, frames, w=6, h=4, region=False):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
        meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("us.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "US"
        ds.Rows, ds.Columns = h, w
        ds.NumberOfFrames = frames
        ds.SamplesPerPixel = samples
        if samples == 3:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
        if region:
            item = Dataset()
            item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = 3, 3
            item.PhysicalDeltaX, item.PhysicalDeltaY = 0.02, 0.03
            ds.SequenceOfUltrasoundRegions = Sequence([item])
        per_pixel = 2 if photometric == "YBR_FULL_422" else samples
        ds.PixelData = bytes((k * 37) % 256 for k in range(frames * w * h * per_pixel))
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    put("us_frame", "us_rgb_3frames.dcm", us("RGB", 3, 3, region=True))
    put("us_frame", "us_mono_4frames.dcm", us("MONOCHROME2", 1, 4))
    put("us_frame", "us_ybr422_2frames.dcm", us("YBR_FULL_422", 3, 2))

    # PALETTE COLOR (16-bit entries, first mapped index 2) and RLE colour (RGB, 2 frames).
    palette = pydicom.dcmread(io.BytesIO(us("MONOCHROME2", 1, 2)))
    palette.PhotometricInterpretation = "PALETTE COLOR"
    for k, colour in enumerate(("Red", "Green", "Blue")):
        setattr(palette, f"{colour}PaletteColorLookupTableDescriptor", [16, 2, 16])
        palette[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        table = np.array([(i * (40 + 30 * k)) % 65536 for i in range(16)], dtype="<u2")
        setattr(palette, f"{colour}PaletteColorLookupTableData", table.tobytes())
    out = io.BytesIO()
    palette.save_as(out, enforce_file_format=True)
    put("us_frame", "us_palette_2frames.dcm", out.getvalue())
    rle = pydicom.dcmread(io.BytesIO(us("RGB", 3, 2)))
    rle.compress(RLELossless, generate_instance_uid=False)
    out = io.BytesIO()
    rle.save_as(out, enforce_file_format=True)
    put("us_frame", "us_rgb_rle_2frames.dcm", out.getvalue())


NRRD_HEADER = """NRRD0004
# Complete NRRD file format specification at:
# http://teem.sourceforge.net/nrrd/format.html
type: short
dimension: 3
space: left-posterior-superior
sizes: 4 4 2
space directions: (0.703125,0,0) (0,0.703125,0) (0,0,2.5)
kinds: domain domain domain
endian: little
encoding: {encoding}
space origin: (-180,-180,-300)
{extra}"""


def nrrd_seeds():
    payload = struct.pack("<32h", *[(-1000 + 60 * i) for i in range(32)])
    raw = NRRD_HEADER.format(encoding="raw", extra="") + "\n"
    put("nrrd", "ct_4x4x2_raw.nrrd", raw.encode() + payload)
    gzh = NRRD_HEADER.format(encoding="gzip", extra="Segment0_Name:=liver\n") + "\n"
    put("nrrd", "ct_4x4x2_gzip_keyvalues.nrrd", gzh.encode() + gz(payload))
    ras = raw.replace("left-posterior-superior", "right-anterior-superior")
    put("nrrd", "ct_4x4x2_ras.nrrd", ras.encode() + payload)
    put("nrrd_detached", "ct_4x4x2_raw",
        NRRD_HEADER.format(encoding="raw", extra="data file: image.raw\n\n").encode() + NRRD_SEPARATOR + payload)
    put("nrrd_detached", "ct_4x4x2_gzip",
        NRRD_HEADER.format(encoding="gzip", extra="data file: image.raw.gz\n\n").encode() + NRRD_SEPARATOR + gz(payload))
    # No blank line after the last field (allowed in a detached header: FUZZING.md finding 3).
    put("nrrd_detached", "ct_4x4x2_datafile_spelling",
        NRRD_HEADER.format(encoding="raw", extra="datafile: ./image.raw\nbyte skip: 2\n").encode() + NRRD_SEPARATOR + b"\0\0" + payload)


# ------------------------------------------------------------------ OpenIGTLink
def igtl_seeds():
    golden = sorted(glob.glob(os.path.join(SHARED, "openigtlink", "*.bin")))
    for path in golden:
        data = open(path, "rb").read()
        put("igtl_decode", os.path.basename(path), data)
    # Streams: a chunk-size byte, then messages back to back, as a client sends them.
    names = ["test_transform_message.bin", "test_status_message.bin", "test_string_message.bin",
             "test_position_message.bin", "test_transform_message_Format2.bin", "test_command_messageFormat2.bin"]
    msgs = [open(os.path.join(SHARED, "openigtlink", n), "rb").read() for n in names]
    # The same streams for the server's own reader (igtl_server_frames: a first byte
    # under 64 also means a 1 MiB budget and the CRC checked).
    for target in ["igtl_stream", "igtl_server_frames"]:
        put(target, "six_messages_chunk7", bytes([6]) + b"".join(msgs))
        put(target, "six_messages_chunk64", bytes([63]) + b"".join(msgs))
        put(target, "image_then_transform_chunk1",
            bytes([0]) + open(os.path.join(SHARED, "openigtlink", "test_image_message.bin"), "rb").read() + msgs[0])
        put(target, "transform_then_half_a_status", bytes([13]) + msgs[0] + msgs[1][:70])
    # The server's body buffer grows past its first 64 KiB only for larger bodies: a
    # header claiming 150,000 bytes with 70,000 sent. First byte 0x40 | 63: 64-byte reads
    # and the 100,000-byte budget, which the second growth exceeds (bit 6 cleared: the
    # 1 MiB budget, the buffer grows, then the stream ends inside the body).
    claim = bytearray(msgs[0][:58])
    claim[42:50] = struct.pack(">Q", 150000)
    put("igtl_server_frames", "transform_then_150k_claim_70k_sent_small_budget",
        bytes([0x40 | 63]) + msgs[0] + bytes(claim) + bytes(i % 251 for i in range(70000)))


# ------------------------------------------------------------------ text formats
def text_seeds():
    put("label_table", "structures.csv", open(os.path.join(SHARED, "chest-ct", "structures.csv"), "rb").read())
    put("label_table", "slicer.ctbl", "# Color table file\n# 3 values\n0 background 0 0 0 0\n1 liver 221 130 101 255\n2 kidney_left 185 102 83 255\n")

    markup = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {"type": "Line", "coordinateSystem": "LPS", "coordinateUnits": "mm", "name": "path 1",
             "controlPoints": [
                 {"id": "1", "label": "entry", "position": [163.1, 35.4, -286.3], "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0], "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"},
                 {"id": "2", "label": "target", "position": [105.5, 27.3, -287.1], "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0], "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"}],
             "display": {"color": [1.0, 0.5, 0.0]}},
            {"type": "Fiducial", "coordinateSystem": "RAS", "name": "targets",
             "controlPoints": [{"id": "1", "label": "tumour", "position": [-10.0, 20.0, 30.0], "positionStatus": "defined"}]},
        ],
    }
    put("markups", "line_and_fiducial.mrk.json", json.dumps(markup, indent=2))

    put("itk_transform", "affine.tfm",
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
        "Parameters: 0.9998 -0.0175 0 0.0175 0.9998 0 0 0 1 12.5 -40 3.25\nFixedParameters: 1 2 3\n")
    put("itk_transform", "rigid_float.tfm",
        "#Insight Transform File V1.0\n#Transform 0\nTransform: Rigid3DTransform_double_3_3\n"
        "Parameters: 1 0 0 0 1 0 0 0 1 0 0 40\nFixedParameters: 0 0 0\n")
    put("itk_transform", "matrix4x4.txt", "# ReferenceToRAS\n1 0 0 10\n0 1 0 -5\n0 0 1 2.5\n0 0 0 1\n")
    put("itk_transform", "matrix12_commas.txt", "1,0,0,0, 0,1,0,0, 0,0,1,40\n")
    put("us_calibration", "plus_config.xml",
        '<?xml version="1.0" encoding="utf-8"?>\n<PlusConfiguration version="2.1">\n'
        '  <DataCollection StartupDelaySec="1.0"><DeviceSet Name="seed" /></DataCollection>\n'
        '  <CoordinateDefinitions>\n'
        '    <Transform From="StylusTip" To="Stylus" Matrix="1 0 0 210 0 1 0 0 0 0 1 0 0 0 0 1" />\n'
        '    <Transform From="Image" To="Probe" Matrix="0.107535 0.00094824 0.0044213 -65.0944 '
        '-0.00370072 -0.106722 -0.0104906 -15.4298 -0.000358 0.0114953 -0.0905823 -4.03253 0 0 0 1" '
        'Error="0.554951" Date="012617_105449" />\n'
        '    <Transform From="Probe" To="Tracker" Matrix="0 -1 0 3 1 0 0 -4 0 0 1 5 0 0 0 1" />\n'
        '  </CoordinateDefinitions>\n</PlusConfiguration>\n')
    put("us_calibration", "probe_to_image.xml",
        '<PlusConfiguration><CoordinateDefinitions><Transform From="Probe" To="Image" '
        'Matrix="5 0 0 -15 0 5 0 0 0 0 5 0 0 0 0 1"/></CoordinateDefinitions></PlusConfiguration>')
    put("us_calibration", "image_to_probe.txt", "0.1 0 0 1\n0 0.1 0 2\n0 0 0.1 3\n0 0 0 1\n")

    put("pose_csv", "matrix17.csv",
        "# Not for clinical use. NeedleTipToReference poses, RAS mm\nt,m00,m01,m02,m03,m10,m11,m12,m13,m20,m21,m22,m23,m30,m31,m32,m33\n"
        "0,1,0,0,10,0,1,0,20,0,0,1,30,0,0,0,1\n0.05,1,0,0,10.5,0,1,0,20,0,0,1,29.5,0,0,0,1\n")
    put("pose_csv", "quaternion8.csv", "t,x,y,z,qx,qy,qz,qw\n0,1,2,3,0,0,0,1\n0.1,1,2,4,0,0.7071068,0,0.7071068\n")

    for name, text in [("label", "kidney_left"), ("label_aim", "kidney_left:lower-pole-cortex"),
                       ("deepest", "liver:deepest"), ("point", "12.5,-40,301"), ("sphere", "-10, 20.5, 30, 15")]:
        put("target_spec", name, text)

    for name, path in [("root", "/"), ("index", "/index.html"), ("asset", "/assets/app.js"),
                       ("folder", "/sub/"), ("escaped", "/assets/%61pp.js"), ("traversal", "/%2e%2e/secret/passwd"),
                       ("symlink", "/out/passwd"), ("backslash", "/..%5csecret")]:
        put("http_static_path", name, path)

    plan = {"target_lps": [105.5, 27.3, -287.1],
            "paths": [{"entry_lps": [163.1, 35.4, -286.3], "target_lps": [105.5, 27.3, -287.1]}]}
    put("plan_json", "hand_written.json", json.dumps(plan))
    snap = os.path.join(ROOT, "crates", "pipeline", "tests", "snapshots", "integration__reports__needle_kidney_biopsy.snap")
    text = open(snap).read()
    body = text.split("---\n", 2)[2]
    put("plan_json", "kidney_biopsy_plan.json", body)


def dicom_net_seeds():
    """Selector byte + bytes (see fuzz_targets/dicom_net_messages.rs): a C-ECHO-RQ and a
    C-STORE-RQ command set (implicit VR LE), and a small CT slice's data set in implicit
    and explicit VR LE."""
    from pydicom.dataset import Dataset
    from pydicom.filewriter import write_dataset
    from pydicom.filebase import DicomBytesIO

    def encode(ds, implicit):
        out = DicomBytesIO()
        out.is_little_endian = True
        out.is_implicit_VR = implicit
        write_dataset(out, ds)
        return out.getvalue()

    def command(field, extra):
        ds = Dataset()
        ds.AffectedSOPClassUID = extra.get("sop_class", "1.2.840.10008.1.1")
        ds.CommandField = field
        ds.MessageID = 7
        ds.CommandDataSetType = 0x0101 if field == 0x0030 else 0x0000
        if "sop_instance" in extra:
            ds.AffectedSOPInstanceUID = extra["sop_instance"]
            ds.Priority = 0
        body = encode(ds, True)
        group = Dataset()
        group.CommandGroupLength = len(body)
        return encode(group, True) + body

    put("dicom_net_messages", "c_echo_rq", b"\x00" + command(0x0030, {}))
    put("dicom_net_messages", "c_store_rq", b"\x00" + command(
        0x0001, {"sop_class": "1.2.840.10008.5.1.4.1.1.2", "sop_instance": "1.2.3.4.5"}))
    slice_ds = pydicom.dcmread(io.BytesIO(small_slice(ct_slices()[0], 4, -766.5, strip=True)))
    slice_ds.StudyInstanceUID = "1.2.3"
    slice_ds.SeriesInstanceUID = "1.2.3.4"
    slice_ds.SOPInstanceUID = "1.2.3.4.5"
    put("dicom_net_messages", "ct_dataset_implicit", b"\x01" + encode(slice_ds, True))
    put("dicom_net_messages", "ct_dataset_explicit", b"\x02" + encode(slice_ds, False))


def main():
    if not os.path.isdir(SHARED):
        sys.exit(f"{SHARED} not found: run from the repository root with ../shared/data beside it")
    os.makedirs(CORPUS, exist_ok=True)
    dicom_seeds()
    dicom_net_seeds()
    nifti_seeds()
    xray_png_seeds()
    us_frame_seeds()
    nrrd_seeds()
    igtl_seeds()
    text_seeds()


if __name__ == "__main__":
    main()
