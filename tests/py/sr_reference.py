#!/usr/bin/env python3
"""Independent reference for Pinhole's Measurement Report writer (TID 1500,
Comprehensive 3D SR): highdicom, pydicom, dciodvfy from dicom3tools.

Commands:
  check SR.dcm CT_DIR
      read SR.dcm twice, with highdicom (srread -> Comprehensive3DSR, its
      MeasurementReport content and the measurement groups its three getters find:
      get_planar_roi_measurement_groups, get_volumetric_roi_measurement_groups,
      get_image_measurement_groups) and with plain pydicom (walking ContentSequence),
      and print JSON:
        "sop_class", "modality", "series_description", "completion_flag",
        "verification_flag", "specific_character_set", "study_uid", "series_uid",
        "frame_of_reference_uid", "patient" / "ct_patient" (name, id, birth date, sex
        of the SR and of the first CT file), "ct_frame_of_reference_uid",
        "ct_instances" (SOP Instance UIDs of CT_DIR, the file meta group's when the data
        set's are blank, sorted), "evidence" ({"study", "series", "instances"} of
        CurrentRequestedProcedureEvidenceSequence), "library" ({"frame_of_reference",
        "instances"} of the Image Library), "template", "title", "language",
        "procedure_reported", "observers" (highdicom's observer contexts: type, uid,
        name),
        "groups_highdicom": per group found by highdicom {
          "kind" (planar / volumetric / image: which getter found it),
          "tracking_identifier", "tracking_uid", "finding", "finding_sites",
          "measurements": [{"concept", "value", "unit", "derivation", "method"}],
          "regions": [{"concept", "graphic_type", "points", "frame_of_reference"}]
        },
        "groups_pydicom": per Measurement Group CONTAINER, from the raw data set {
          "tracking_identifier", "tracking_uid", "finding", "finding_site",
          "measurements": [{"concept", "numeric_value" (the DS string),
            "floating_point_value", "unit", "modifiers": [[concept, value]]}],
          "regions": [{"concept", "graphic_type", "points", "frame_of_reference"}],
          "relationships": [[concept value or value type, relationship type], ...]
        },
        "root_relationships": the same for the root's children,
        "dciodvfy": {"available": bool, "errors": [...], "warnings": [...]}
      Codes are [value, scheme, meaning].
  sphere-zone CT.nii.gz OUT.nii.gz X Y Z R
      write a label map on CT's grid (nibabel) holding 1 inside the ball of radius R mm
      around the LPS point (X, Y, Z) (voxel centres), 0 elsewhere: a constructed
      ablation zone; prints {"voxels": n}.
  tube CT.nii.gz OUT.nii.gz
      write a label map on CT's grid holding 1 inside a tube along x (LPS) through
      y = -188, z = -785.5 mm from x = -120 to 120 mm, radius 5 mm narrowing smoothly to
      2.5 mm at x = 0 (a constructed 50 % stenosis); prints {"voxels": n}.
"""

import glob
import json
import os
import sys

import highdicom as hd
import pydicom

from seg_reference import dciodvfy  # same verdict: "Error" / "Warning" lines

GROUP = "125007"
SCOORD3D = hd.sr.ValueTypeValues.SCOORD3D


def raw_code(sequence):
    if not sequence:
        return None
    item = sequence[0]
    value = item.get("CodeValue") or item.get("LongCodeValue")
    return [str(value), str(item.CodingSchemeDesignator), str(item.CodeMeaning)]


def hd_code(concept):
    if concept is None:
        return None
    return [str(concept.value), str(concept.scheme_designator), str(concept.meaning)]


def concept_value(item):
    sequence = item.get("ConceptNameCodeSequence")
    return raw_code(sequence)[0] if sequence else str(item.ValueType)


def patient(ds):
    return [str(ds.get(k, "")) for k in
            ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")]


def ct_files(ct_dir):
    datasets = []
    for path in sorted(glob.glob(os.path.join(ct_dir, "*"))):
        try:
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception:
            continue
    return datasets


def instance_uid(ds):
    return str(ds.get("SOPInstanceUID", "") or ds.file_meta.MediaStorageSOPInstanceUID)


# ------------------------------------------------------------------------------------
# highdicom


def hd_regions(group):
    regions = []
    for item in group[0].ContentSequence:
        if item.value_type != SCOORD3D:
            continue
        regions.append({
            "concept": hd_code(item.name),
            "graphic_type": item.graphic_type.value,
            "points": item.value.tolist(),
            "frame_of_reference": str(item.frame_of_reference_uid),
        })
    return regions


def hd_group(kind, group):
    return {
        "kind": kind,
        "tracking_identifier": group.tracking_identifier,
        "tracking_uid": str(group.tracking_uid),
        "finding": hd_code(group.finding_type),
        "finding_sites": [hd_code(site.value) for site in group.finding_sites],
        "measurements": [
            {
                "concept": hd_code(m.name),
                "value": float(m.value),
                "unit": hd_code(m.unit),
                "derivation": hd_code(m.derivation),
                "method": hd_code(m.method),
            }
            for m in group.get_measurements()
        ],
        "regions": hd_regions(group),
    }


def highdicom_view(path):
    sr = hd.sr.srread(path)
    if not isinstance(sr, hd.sr.Comprehensive3DSR):
        raise SystemExit(f"highdicom read {type(sr).__name__}, not Comprehensive3DSR")
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise SystemExit(f"content is {type(report).__name__}, not MeasurementReport")
    groups = []
    for kind, getter in (
        ("planar", report.get_planar_roi_measurement_groups),
        ("volumetric", report.get_volumetric_roi_measurement_groups),
        ("image", report.get_image_measurement_groups),
    ):
        groups.extend(hd_group(kind, g) for g in getter())
    observers = []
    for context in report.get_observer_contexts():
        attributes = context.observer_identifying_attributes
        observers.append({
            "type": hd_code(context.observer_type),
            "uid": str(attributes.uid),
            "name": attributes.name,
        })
    return groups, observers


# ------------------------------------------------------------------------------------
# pydicom


def relationships(item):
    return [[concept_value(child), str(child.RelationshipType)]
            for child in item.get("ContentSequence", [])]


def children(item, concept):
    return [c for c in item.get("ContentSequence", []) if concept_value(c) == concept]


def only(item, concept):
    found = children(item, concept)
    if len(found) > 1:
        raise SystemExit(f"{len(found)} items {concept} in one container")
    return found[0] if found else None


def raw_measurement(item):
    measured = item.MeasuredValueSequence[0]
    raw = measured["NumericValue"].value  # the DS as stored
    return {
        "concept": raw_code(item.ConceptNameCodeSequence),
        "numeric_value": str(getattr(raw, "original_string", None) or raw),
        "floating_point_value": float(measured.FloatingPointValue)
        if "FloatingPointValue" in measured else None,
        "unit": raw_code(measured.MeasurementUnitsCodeSequence),
        "modifiers": [
            [raw_code(c.ConceptNameCodeSequence)[0], raw_code(c.ConceptCodeSequence)]
            for c in item.get("ContentSequence", [])
        ],
    }


def raw_group(item):
    tracking = only(item, "112039")
    uid = only(item, "112040")
    finding = only(item, "121071")
    site = only(item, "363698007")
    contents = item.get("ContentSequence", [])
    values = list(contents)
    return {
        "tracking_identifier": str(tracking.TextValue) if tracking else None,
        "tracking_uid": str(uid.UID) if uid else None,
        "finding": raw_code(finding.ConceptCodeSequence) if finding else None,
        "finding_site": raw_code(site.ConceptCodeSequence) if site else None,
        "measurements": [raw_measurement(c) for c in values if c.ValueType == "NUM"],
        "regions": [
            {
                "concept": raw_code(c.ConceptNameCodeSequence),
                "graphic_type": str(c.GraphicType),
                "points": [
                    [float(v) for v in c.GraphicData[i:i + 3]]
                    for i in range(0, len(c.GraphicData), 3)
                ],
                "frame_of_reference": str(c.ReferencedFrameOfReferenceUID),
            }
            for c in values
            if c.ValueType == "SCOORD3D"
        ],
        "relationships": relationships(item),
    }


def check(sr_path, ct_dir):
    ds = pydicom.dcmread(sr_path)
    cts = ct_files(ct_dir)
    groups_hd, observers = highdicom_view(sr_path)
    measurements = only(ds, "126010")
    library = only(ds, "111028")
    library_group = only(library, "126200")
    library_for = only(library_group, "112227")
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    evidence_series = evidence.ReferencedSeriesSequence[0]
    print(json.dumps({
        "sop_class": str(ds.SOPClassUID),
        "modality": str(ds.Modality),
        "series_description": str(ds.SeriesDescription),
        "completion_flag": str(ds.CompletionFlag),
        "verification_flag": str(ds.VerificationFlag),
        "specific_character_set": str(ds.get("SpecificCharacterSet", "")),
        "study_uid": str(ds.StudyInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "patient": patient(ds),
        "ct_patient": patient(cts[0]),
        "ct_frame_of_reference_uid": str(cts[0].FrameOfReferenceUID),
        "ct_instances": sorted(instance_uid(c) for c in cts),
        "evidence": {
            "study": str(evidence.StudyInstanceUID),
            "series": str(evidence_series.SeriesInstanceUID),
            "instances": sorted(
                str(r.ReferencedSOPInstanceUID)
                for r in evidence_series.ReferencedSOPSequence
            ),
        },
        "library": {
            "frame_of_reference": str(library_for.UID) if library_for else None,
            "instances": sorted(
                str(c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                for c in library_group.ContentSequence
                if c.ValueType == "IMAGE"
            ),
        },
        "template": str(ds.ContentTemplateSequence[0].TemplateIdentifier),
        "title": raw_code(ds.ConceptNameCodeSequence),
        "language": raw_code(only(ds, "121049").ConceptCodeSequence),
        "procedure_reported": raw_code(only(ds, "121058").ConceptCodeSequence),
        "observers": observers,
        "groups_highdicom": groups_hd,
        "groups_pydicom": [raw_group(g) for g in children(measurements, GROUP)],
        "root_relationships": relationships(ds),
        "measurements_relationships": relationships(measurements),
        "dciodvfy": dciodvfy(sr_path),
    }))


def sphere_zone(ct_path, out_path, x, y, z, r):
    import nibabel as nib
    import numpy as np

    ct = nib.load(ct_path)
    shape = ct.shape[:3]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    ras = ijk @ ct.affine[:3, :3].T + ct.affine[:3, 3]
    lps = ras * np.array([-1.0, -1.0, 1.0])
    inside = np.linalg.norm(lps - np.array([float(x), float(y), float(z)]), axis=-1) <= float(r)
    nib.save(nib.Nifti1Image(inside.astype(np.uint8), ct.affine), out_path)
    print(json.dumps({"voxels": int(inside.sum())}))


def tube(ct_path, out_path):
    import nibabel as nib
    import numpy as np

    ct = nib.load(ct_path)
    shape = ct.shape[:3]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    lps = (ijk @ ct.affine[:3, :3].T + ct.affine[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    x, y, z = lps[..., 0], lps[..., 1], lps[..., 2]
    radius = 5.0 - 2.5 * np.exp(-(x / 8.0) ** 2)
    inside = (np.hypot(y + 188.0, z + 785.5) <= radius) & (np.abs(x) <= 120.0)
    nib.save(nib.Nifti1Image(inside.astype(np.uint8), ct.affine), out_path)
    print(json.dumps({"voxels": int(inside.sum())}))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "tube":
        tube(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 8 and sys.argv[1] == "sphere-zone":
        sphere_zone(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
