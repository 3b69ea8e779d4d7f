#!/usr/bin/env python3
"""Independent reference for Pinhole's DICOM Segmentation writer (highdicom, pydicom,
dciodvfy from dicom3tools).

Commands:
  make-labels CT.nii.gz OUT.nii.gz [EXTRA_ID]
      write a label map on the CT's grid (1: HU > 300, 2: a box at the centre, EXTRA_ID:
      one voxel) and print {"counts": {"id": voxels}} (used by the CLI's tests)
  check SEG.dcm CT_DIR OUT.u16 [N=R,G,B ...]
      read SEG.dcm with highdicom and pydicom, write to OUT.u16 the segment number of
      every voxel of the CT grid (highdicom's get_pixels_by_source_instance with
      combine_segments, the CT slices sorted along their normal; slice, row, column
      C order, little-endian uint16) and print JSON:
        "sop_class", "modality", "segmentation_type", "number_of_frames",
        "study_uid", "frame_of_reference_uid", "referenced_instances" (count),
        "segments": per segment {
          "number", "label", "algorithm_type", "category" / "type" ([value, scheme,
          meaning]), "cielab" (stored RecommendedDisplayCIELabValue or null),
          "cielab_from_rgb" (highdicom's CIELabColor.from_rgb of the N=R,G,B argument
          for this segment number, or null),
          "frames" (how many frames the segment has),
          "count_pixels" / "centroid_pixels_lps": voxel count and LPS centroid (mm) from
            pydicom's unpacked pixel_array placed with each frame's own
            PlanePositionSequence and the shared PlaneOrientationSequence /
            PixelMeasuresSequence,
          "count_volume" / "centroid_volume_lps": the same from highdicom's get_volume()
            (its own geometry), null for a segment without frames,
          "per_source": [[ImagePositionPatient of the CT slice, voxel count], ...] for
            every CT slice of CT_DIR with a non-zero count, from highdicom's
            get_pixels_by_source_instance() with the CT files' SOP Instance UIDs
            (the file meta group's when the data set's are blank)
        },
        "dciodvfy": {"available": bool, "errors": [...], "warnings": [...]}
  highdicom-seg CT_DIR OUT.dcm EXPECTED.npy [fractional]
      write with highdicom a Segmentation of the CT series in CT_DIR (its blank UIDs
      filled first) holding two overlapping segments: 1 "liver" (a 200 x 150-pixel box on
      slices 3..14) and 2 "liver_tumor" (a 30 x 20 box inside it on slices 6..9); frames
      of empty slices omitted (highdicom's default); BINARY, or FRACTIONAL (8-bit, max
      255, the liver box's border pixels at 100 = outside, 200 = inside). EXPECTED.npy:
      the label map on the CT grid (slices sorted along the normal, i fastest; the
      smaller segment keeps the overlap). Prints {"segments": {...}, "frames": n}.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import highdicom as hd
import numpy as np
import pydicom


def code(sequence):
    item = sequence[0]
    value = item.get("CodeValue") or item.get("LongCodeValue")
    return [str(value), str(item.CodingSchemeDesignator), str(item.CodeMeaning)]


def frame_lps(ds, frame_index, mask):
    """LPS positions (mm) of the set pixels of one frame, from the SEG's own geometry."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = np.array(
        shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float
    )
    spacing = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, dtype=float)
    frame = ds.PerFrameFunctionalGroupsSequence[frame_index]
    origin = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    rows, cols = np.nonzero(mask)
    row_dir, col_dir = orientation[:3], orientation[3:]
    # Column index c moves along the row direction by PixelSpacing[1], row index r down
    # the column direction by PixelSpacing[0].
    return (
        origin[None, :]
        + cols[:, None] * spacing[1] * row_dir[None, :]
        + rows[:, None] * spacing[0] * col_dir[None, :]
    )


def pixel_statistics(ds, pixels):
    """Per segment number: [count, sum of LPS positions, frames]."""
    stats = {}
    for f, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        points = frame_lps(ds, f, pixels[f])
        entry = stats.setdefault(number, [0, np.zeros(3), 0])
        entry[0] += len(points)
        entry[1] += points.sum(axis=0)
        entry[2] += 1
    return stats


def volume_statistics(seg, number):
    volume = seg.get_volume(segment_numbers=[number])
    array = np.asarray(volume.array)
    if array.ndim == 4:
        array = array[..., 0]
    indices = np.argwhere(array > 0)
    if len(indices) == 0:
        return 0, None
    homogeneous = np.c_[indices.astype(float), np.ones(len(indices))]
    lps = (np.asarray(volume.affine) @ homogeneous.T).T[:, :3]
    return int(len(indices)), lps.mean(axis=0).tolist()


def ct_slices(ct_dir):
    """(SOP Instance UID, ImagePositionPatient) of every CT file, sorted along the
    slice normal (row direction x column direction)."""
    slices = []
    for path in sorted(glob.glob(os.path.join(ct_dir, "*"))):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        uid = str(ds.get("SOPInstanceUID", "") or ds.file_meta.MediaStorageSOPInstanceUID)
        orientation = np.array(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        position = [float(v) for v in ds.ImagePositionPatient]
        slices.append((float(np.dot(position, normal)), uid, position))
    return [(uid, position) for _, uid, position in sorted(slices)]


def write_label_volume(seg, slices, out_path):
    """Segment numbers on the CT grid, from highdicom's source-instance indexing."""
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uid for uid, _ in slices],
        combine_segments=True,
        assert_missing_frames_are_empty=True,
    )
    np.asarray(pixels, dtype="<u2").tofile(out_path)


def per_source(seg, slices, number):
    uids = [uid for uid, _ in slices]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=[number],
        assert_missing_frames_are_empty=True,
    )
    counts = pixels.reshape(len(uids), -1).astype(bool).sum(axis=1)
    return [[slices[i][1], int(n)] for i, n in enumerate(counts) if n > 0]


def dciodvfy(path):
    tool = shutil.which("dciodvfy")
    if tool is None:
        return {"available": False, "errors": [], "warnings": []}
    run = subprocess.run([tool, path], capture_output=True, text=True)
    lines = (run.stdout + run.stderr).splitlines()
    return {
        "available": True,
        "errors": [l for l in lines if l.startswith("Error")],
        "warnings": [l for l in lines if l.startswith("Warning")],
    }


def parse_rgb(arguments):
    colours = {}
    for argument in arguments:
        number, rgb = argument.split("=")
        colours[int(number)] = [int(v) for v in rgb.split(",")]
    return colours


def check(seg_path, ct_dir, out_path, rgb_arguments):
    ds = pydicom.dcmread(seg_path)
    seg = hd.seg.segread(seg_path)
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    stats = pixel_statistics(ds, pixels)
    slices = ct_slices(ct_dir)
    write_label_volume(seg, slices, out_path)
    colours = parse_rgb(rgb_arguments)
    segments = []
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        count, total, frames = stats.get(number, [0, np.zeros(3), 0])
        has_frames = frames > 0
        count_volume, centroid_volume = (
            volume_statistics(seg, number) if has_frames else (0, None)
        )
        rgb = colours.get(number)
        segments.append(
            {
                "number": number,
                "label": str(item.SegmentLabel),
                "algorithm_type": str(item.SegmentAlgorithmType),
                "category": code(item.SegmentedPropertyCategoryCodeSequence),
                "type": code(item.SegmentedPropertyTypeCodeSequence),
                "cielab": [int(v) for v in item.RecommendedDisplayCIELabValue]
                if "RecommendedDisplayCIELabValue" in item
                else None,
                "cielab_from_rgb": list(hd.color.CIELabColor.from_rgb(*rgb).value)
                if rgb
                else None,
                "frames": frames,
                "count_pixels": int(count),
                "centroid_pixels_lps": (total / count).tolist() if count else None,
                "count_volume": count_volume,
                "centroid_volume_lps": centroid_volume,
                "per_source": per_source(seg, slices, number) if has_frames else [],
            }
        )
    referenced = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    print(
        json.dumps(
            {
                "sop_class": str(ds.SOPClassUID),
                "modality": str(ds.Modality),
                "segmentation_type": str(ds.SegmentationType),
                "number_of_frames": int(ds.NumberOfFrames),
                "study_uid": str(ds.StudyInstanceUID),
                "frame_of_reference_uid": str(ds.FrameOfReferenceUID),
                "referenced_instances": len(referenced),
                "segments": segments,
                "dciodvfy": dciodvfy(seg_path),
            }
        )
    )


def make_labels(ct_path, out_path, extra):
    """A label map on the grid of CT_PATH (nibabel): 1 = bone (HU > 300), 2 = a 20-voxel
    box at the grid's centre through every slice, EXTRA (when not 0) = one voxel in a
    corner. Prints the voxel count of each label."""
    import nibabel as nib

    ct = nib.load(ct_path)
    hu = np.asarray(ct.dataobj)
    labels = np.zeros(hu.shape, np.uint16)
    labels[hu > 300] = 1
    ci, cj = hu.shape[0] // 2, hu.shape[1] // 2
    labels[ci - 10:ci + 10, cj - 10:cj + 10, :] = 2
    if extra:
        labels[0, 0, 0] = extra
    nib.save(nib.Nifti1Image(labels, ct.affine), out_path)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    print(json.dumps({"counts": {str(int(i)): int(c) for i, c in zip(ids, counts)}}))


def highdicom_seg(ct_dir, out_path, expected_path, kind="binary"):
    from highdicom.sr.coding import CodedConcept

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from enhanced_reference import load_series
    import voxel_file

    slices = ct_slices(ct_dir)
    order = {uid: k for k, (uid, _) in enumerate(slices)}
    datasets = load_series(ct_dir)
    for ds in datasets:
        ds.SOPInstanceUID = str(ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID)
    datasets.sort(key=lambda ds: order[str(ds.file_meta.MediaStorageSOPInstanceUID)])
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    liver = np.zeros((len(datasets), rows, columns), dtype=np.uint8)
    tumor = np.zeros_like(liver)
    liver[3:15, 200:350, 100:300] = 1
    tumor[6:10, 260:280, 180:210] = 1
    organ = CodedConcept("123037004", "SCT", "Anatomical Structure")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=organ,
            segmented_property_type=CodedConcept(value, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for number, label, value, meaning in (
            (1, "liver", "10200004", "Liver"), (2, "liver_tumor", "108369006", "Neoplasm"))
    ]
    masks = np.stack([liver, tumor], axis=-1)
    extra = {}
    if kind == "fractional":
        fractional = masks.astype(np.float32)
        # The liver box's first and last columns: 100/255 (outside) and 200/255 (inside).
        fractional[3:15, 200:350, 100, 0] = 100 / 255
        fractional[3:15, 200:350, 299, 0] = 200 / 255
        masks = fractional
        extra = {"max_fractional_value": 255}
        liver[3:15, 200:350, 100] = 0
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=masks,
        segmentation_type=(hd.seg.SegmentationTypeValues.FRACTIONAL if kind == "fractional"
                           else hd.seg.SegmentationTypeValues.BINARY),
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=77,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="highdicom test",
        manufacturer_model_name="reference", software_versions="1", device_serial_number="1",
        **extra)
    seg.save_as(out_path)
    expected = liver.astype(np.uint16)
    expected[tumor > 0] = 2
    voxel_file.save(expected.ravel(), expected_path)
    print(json.dumps({"segments": {"1": "liver", "2": "liver_tumor"},
                      "frames": int(seg.NumberOfFrames),
                      "source_series_uid": str(datasets[0].SeriesInstanceUID)}))


def main():
    if len(sys.argv) in (5, 6) and sys.argv[1] == "highdicom-seg":
        highdicom_seg(*sys.argv[2:])
    elif len(sys.argv) >= 5 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "make-labels":
        make_labels(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) == 5 else 0)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
