#!/usr/bin/env python3
"""Independent reference for Pinhole's Secondary Capture writer (pydicom, dciodvfy from
dicom3tools).

Commands:
  check SC.dcm CT_DIR OUT.rgb
      read SC.dcm with pydicom, write its decoded pixel_array to OUT.rgb (rows, columns,
      RGB; uint8, C order) and print JSON: "sop_class", "modality", "rows", "columns",
      "samples_per_pixel", "photometric", "planar_configuration", "bits_allocated",
      "bits_stored", "conversion_type", "burned_in_annotation", "image_type",
      "series_description", "study_uid", "has_frame_of_reference",
      "patient" / "ct_patient" (name, id, birth date, sex of the SC and of the first CT
      file), "dciodvfy": {"available": bool, "errors": [...], "warnings": [...]}
"""

import glob
import json
import os
import sys

import numpy as np
import pydicom

from seg_reference import dciodvfy  # same verdict: "Error" / "Warning" lines
from sr_reference import patient


def first_ct(ct_dir):
    for path in sorted(glob.glob(os.path.join(ct_dir, "*"))):
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
    raise SystemExit(f"no DICOM file in {ct_dir}")


def check(sc_path, ct_dir, out_path):
    ds = pydicom.dcmread(sc_path)
    pixels = np.asarray(ds.pixel_array, dtype=np.uint8)
    if pixels.shape != (ds.Rows, ds.Columns, 3):
        raise SystemExit(f"pixel_array shape {pixels.shape}")
    pixels.tofile(out_path)
    print(json.dumps({
        "sop_class": str(ds.SOPClassUID),
        "modality": str(ds.Modality),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "samples_per_pixel": int(ds.SamplesPerPixel),
        "photometric": str(ds.PhotometricInterpretation),
        "planar_configuration": int(ds.PlanarConfiguration),
        "bits_allocated": int(ds.BitsAllocated),
        "bits_stored": int(ds.BitsStored),
        "conversion_type": str(ds.ConversionType),
        "burned_in_annotation": str(ds.BurnedInAnnotation),
        "image_type": [str(v) for v in ds.ImageType],
        "series_description": str(ds.SeriesDescription),
        "study_uid": str(ds.StudyInstanceUID),
        "has_frame_of_reference": "FrameOfReferenceUID" in ds,
        "patient": patient(ds),
        "ct_patient": patient(first_ct(ct_dir)),
        "dciodvfy": dciodvfy(sc_path),
    }))


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
