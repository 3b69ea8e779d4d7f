#!/usr/bin/env python3
"""The peer of `pinhole dicom deidentify`: dicom-anonymizer (KitwareMedical, PyPI), which
applies the same DICOM PS3.15 Table E.1-1 basic profile (its 2026c table) with pydicom.

    deidentify_peer.py make SOURCE_DIR IDENTIFIED_DIR
    deidentify_peer.py compare IDENTIFIED_DIR PINHOLE_OUT_DIR
    deidentify_peer.py derived IDENTIFIED_DIR PINHOLE_OUT_DIR OBJECT

`make` gives the shared (already anonymised) series an identity to remove: patient name,
ID and birth date, institution, station, accession number, referring physician, real
study / series UIDs, other patient IDs in a sequence, a private block, and a Referenced
Image Sequence naming the previous slice (a link that must survive with new UIDs).

Each source file is de-identified by dicom-anonymizer too; Pinhole's output file of the
same slice is found by ImagePositionPatient. For every top-level attribute of the source,
what each tool did is classified as removed / emptied / kept / changed, and the two are
compared. Also checked on Pinhole's output, with pydicom only: no source value of the
patient's identity or of an instance UID is left anywhere in the file (sequences
included), pixel data are byte-identical, the file meta group names the new SOP Instance
UID, and the UIDs stay consistent (one study, one series, unique instances). Prints JSON.
"""

import glob
import json
import os
import sys
import tempfile

import pydicom


# SOP Class / Instance, Study and Series Instance UID.
BLANK_FILLED = {0x00080016, 0x00080018, 0x0020000D, 0x0020000E}


def classify(source, result, tag):
    if tag not in result:
        return "removed"
    value = result[tag].value
    if value in (None, "", b"") or (isinstance(value, (list, pydicom.multival.MultiValue)) and len(value) == 0):
        return "emptied"
    return "kept" if value == source[tag].value else "changed"


def all_strings(dataset):
    """Every text value in the data set, sequences included."""
    out = []
    for element in dataset.iterall():
        if element.VR in ("SQ", "OB", "OW", "UN", "OF", "OD", "OL"):
            continue
        value = element.value
        values = value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]
        out.extend(str(v) for v in values if v not in (None, ""))
    return set(out)


IDENTITY = {
    "PatientName": "DOE^JANE",
    "PatientID": "MRN-4711",
    "PatientBirthDate": "19700101",
    "InstitutionName": "General Hospital Radiology",
    "StationName": "CTSCAN01",
    "AccessionNumber": "ACC-998877",
    "ReferringPhysicianName": "WHO^DOCTOR",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.4711",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.4712",
}


def make(source_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    previous = None
    for n, path in enumerate(sorted(glob.glob(os.path.join(source_dir, "*")))):
        d = pydicom.dcmread(path)
        for name, value in IDENTITY.items():
            setattr(d, name, value)
        d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID
        d.SOPClassUID = d.file_meta.MediaStorageSOPClassUID
        other = pydicom.Dataset()
        other.PatientID = "OLD-MRN-1234"
        d.OtherPatientIDsSequence = [other]
        block = d.private_block(0x0029, "ACME 1.0", create=True)
        block.add_new(0x01, "LO", "DOE^JANE private copy")
        if previous is not None:
            ref = pydicom.Dataset()
            ref.ReferencedSOPClassUID = d.SOPClassUID
            ref.ReferencedSOPInstanceUID = previous
            d.ReferencedImageSequence = [ref]
        previous = d.SOPInstanceUID
        d.save_as(os.path.join(out_dir, f"slice{n:03d}.dcm"))
    print(json.dumps({"files": n + 1}))


def uids_in(dataset):
    out = set()
    for element in dataset.iterall():
        if element.VR == "UI" and element.value:
            values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
            out.update(str(v) for v in values)
    return out


def derived(identified_dir, deid_dir, path):
    """A SEG / SR / SC written with --deidentify from the identified series: what of the
    identity is left, and whether it references the de-identified series' UIDs."""
    obj = pydicom.dcmread(path)
    source = [pydicom.dcmread(p) for p in sorted(glob.glob(os.path.join(identified_dir, "*.dcm")))]
    deid = [pydicom.dcmread(p) for p in glob.glob(os.path.join(deid_dir, "*", "*", "*.dcm"))]
    original = set().union(*(uids_in(d) for d in source)) - {str(d.SOPClassUID) for d in source}
    original = {u for u in original if not u.startswith("1.2.840.10008.")}
    text = all_strings(obj)
    secrets = [str(v) for v in IDENTITY.values()] + ["OLD-MRN-1234", "DOE^JANE private copy"]
    present = uids_in(obj)
    print(json.dumps({
        "identity_left": sorted(s for s in secrets if s in text),
        "original_uids_left": sorted(present & original),
        "patient_identity_removed": str(obj.get("PatientIdentityRemoved", "")),
        "private_attributes": sum(1 for e in obj.iterall() if e.tag.is_private),
        "study_matches": str(obj.StudyInstanceUID) == str(deid[0].StudyInstanceUID),
        "frame_of_reference_matches": str(obj.get("FrameOfReferenceUID", "")) == str(deid[0].FrameOfReferenceUID)
                                      or str(deid[0].FrameOfReferenceUID) in present,
        "series_referenced": str(deid[0].SeriesInstanceUID) in present,
        "instances_referenced": len(present & {str(d.SOPInstanceUID) for d in deid}),
        "sop_instance_uid": str(obj.SOPInstanceUID),
        "series_instance_uid": str(obj.SeriesInstanceUID),
    }))


def main():
    if sys.argv[1] == "make":
        return make(sys.argv[2], sys.argv[3])
    if sys.argv[1] == "derived":
        return derived(sys.argv[2], sys.argv[3], sys.argv[4])
    source_dir, ours_dir = sys.argv[2], sys.argv[3]
    from dicomanonymizer.simpledicomanonymizer import anonymize_dicom_file, initialize_actions

    ours = {}
    for path in glob.glob(os.path.join(ours_dir, "*", "*", "*.dcm")):
        d = pydicom.dcmread(path)
        ours[tuple(float(v) for v in d.ImagePositionPatient)] = (path, d)

    compared = 0
    new_of = {}
    pending = []
    known = {}
    mismatches = []
    identity_left = []
    pixels_equal = 0
    meta_matches = 0
    studies, series, instances = set(), set(), set()
    with tempfile.TemporaryDirectory() as tmp:
        for n, path in enumerate(sorted(glob.glob(os.path.join(source_dir, "*")))):
            source = pydicom.dcmread(path)
            peer_path = os.path.join(tmp, f"{n}.dcm")
            anonymize_dicom_file(
                path, peer_path, base_rules_gen=lambda: initialize_actions("dicomfields_2026c")
            )
            peer = pydicom.dcmread(peer_path)
            _, mine = ours[tuple(float(v) for v in source.ImagePositionPatient)]
            for element in source:
                tag = element.tag
                if element.VR == "SQ" or tag == 0x7FE00010:
                    continue
                compared += 1
                a, b = classify(source, mine, tag), classify(source, peer, tag)
                if a == b:
                    continue
                record = {"tag": str(tag), "name": element.name, "vr": element.VR,
                          "pinhole": a, "peer": b}
                if element.VR in ("DA", "TM", "DT") and b == "changed" and a in ("removed", "emptied"):
                    # dicom-anonymizer writes dummy dates and times where the table says X
                    # or Z (its documented choice, after Laurel Bridge); Pinhole follows
                    # the table.
                    known[(str(tag), "peer keeps a dummy date/time where the table removes or empties")] = 1
                elif tag in BLANK_FILLED and not str(element.value).strip() and a == "changed":
                    known[(str(tag), "blank in the source: Pinhole fills it (file meta group / Frame of Reference)")] = 1
                else:
                    mismatches.append(record)
            secrets = [
                str(source.get(name, "") or "")
                for name in ("PatientName", "PatientID", "PatientBirthDate", "SOPInstanceUID",
                             "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                             "InstitutionName", "StationName", "DeviceSerialNumber",
                             "AccessionNumber", "ReferringPhysicianName")
            ] + ["OLD-MRN-1234", "DOE^JANE private copy"]
            left = all_strings(mine)
            if "ReferencedImageSequence" in source:
                wanted = source.ReferencedImageSequence[0].ReferencedSOPInstanceUID
                pending.append((wanted, mine.ReferencedImageSequence[0].ReferencedSOPInstanceUID
                                if "ReferencedImageSequence" in mine else None))
            new_of[source.SOPInstanceUID] = mine.SOPInstanceUID
            identity_left += [s for s in secrets if len(s) > 3 and s in left]
            pixels_equal += int(mine.PixelData == source.PixelData)
            meta_matches += int(mine.file_meta.MediaStorageSOPInstanceUID == mine.SOPInstanceUID)
            studies.add(mine.StudyInstanceUID)
            series.add(mine.SeriesInstanceUID)
            instances.add(mine.SOPInstanceUID)
    # Links to slices of the set (the series' own references to a localizer cannot be
    # followed here).
    inside = [(old, new) for old, new in pending if old in new_of]
    links = len(inside)
    links_kept = sum(1 for old, new in inside if new is not None and new_of[old] == new)
    print(json.dumps({
        "files": len(ours),
        "links": links,
        "links_kept": links_kept,
        "compared_attributes": compared,
        "mismatches": mismatches,
        "known_differences": [{"tag": t, "why": w} for t, w in sorted(known)],
        "identity_left": sorted(set(identity_left)),
        "pixels_equal": pixels_equal,
        "meta_matches": meta_matches,
        "studies": len(studies),
        "series": len(series),
        "instances": len(instances),
        "patient_identity_removed": [str(d.get("PatientIdentityRemoved", "")) for _, d in ours.values()][:1],
    }))


if __name__ == "__main__":
    main()
