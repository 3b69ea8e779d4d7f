"""pynetdicom as an independent DICOM peer (SCU) of pinhole-dicomnet's listener
(crates/dicomnet tests).

echo HOST PORT AE [--calling AE]
    C-ECHO to AE at HOST:PORT.
store HOST PORT AE FILES... [--calling AE] [--fill-blank-uids] [--sop-instance-uid UID]
    C-STORE every file (one association, a presentation context per SOP class with the
    file's own transfer syntax).
    --fill-blank-uids: the shared CT series is de-identified with blank SOP Class /
    Instance, Study and Series Instance UIDs in its data sets (only the file meta group
    keeps the SOP UIDs), which no SCU can send as they are: fill the SOP UIDs from the
    file meta group, Study / Series UIDs derived (pydicom generate_uid, deterministic)
    from the FrameOfReferenceUID. Pixel data are untouched.
    --sop-instance-uid replaces the SOP Instance UID of every data set (to send unsafe
    UIDs such as ../../evil; UID conformance checks off).

Prints JSON: {"accepted": bool, "statuses": [int, ...]} (and "rejected" details when the
association was refused). Exit code 0 only when the association was accepted and every
status is success (0x0000); 3 when the association was rejected or failed.
"""
import argparse
import json
import os
import sys

import pydicom
import pydicom.config
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, debug_logger  # noqa: F401
from pynetdicom.sop_class import Verification

TIMEOUT_S = 30


def make_ae(calling):
    ae = AE(ae_title=calling)
    ae.acse_timeout = TIMEOUT_S
    ae.dimse_timeout = TIMEOUT_S
    ae.network_timeout = TIMEOUT_S
    return ae


def associate(ae, args):
    assoc = ae.associate(args.host, args.port, ae_title=args.ae)
    if not assoc.is_established:
        out = {"accepted": False, "statuses": [], "rejected": bool(assoc.is_rejected),
               "aborted": bool(assoc.is_aborted)}
        print(json.dumps(out))
        sys.exit(3)
    return assoc


def finish(assoc, statuses):
    assoc.release()
    print(json.dumps({"accepted": True, "statuses": statuses}))
    sys.exit(0 if statuses and all(s == 0 for s in statuses) else 1)


def status_of(rsp):
    # An empty Dataset: no response (timeout, abort).
    return int(rsp.Status) if rsp is not None and "Status" in rsp else -1


def echo(args):
    ae = make_ae(args.calling)
    ae.add_requested_context(Verification)
    assoc = associate(ae, args)
    finish(assoc, [status_of(assoc.send_c_echo())])


def fill_blank_uids(ds):
    if not ds.get("SOPClassUID"):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    if not ds.get("SOPInstanceUID"):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    seed = str(ds.get("FrameOfReferenceUID") or "pinhole")
    if not ds.get("StudyInstanceUID"):
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    if not ds.get("SeriesInstanceUID"):
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])


def store(args):
    datasets = [pydicom.dcmread(f) for f in args.files]
    if args.fill_blank_uids:
        for ds in datasets:
            fill_blank_uids(ds)
    if args.sop_instance_uid is not None:
        _config.ENFORCE_UID_CONFORMANCE = False
        pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
        for ds in datasets:
            ds.SOPInstanceUID = args.sop_instance_uid
            ds.file_meta.MediaStorageSOPInstanceUID = args.sop_instance_uid
    ae = make_ae(args.calling)
    contexts = {}
    for ds in datasets:
        syntaxes = contexts.setdefault(ds.SOPClassUID, [])
        for ts in (ds.file_meta.TransferSyntaxUID, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if ts not in syntaxes:
                syntaxes.append(ts)
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, syntaxes)
    assoc = associate(ae, args)
    statuses = []
    for ds in datasets:
        statuses.append(status_of(assoc.send_c_store(ds)))
    finish(assoc, statuses)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("echo", "store"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("ae")
        p.add_argument("--calling", default="PYNETDICOM")
        if name == "store":
            p.add_argument("files", nargs="+")
            p.add_argument("--fill-blank-uids", action="store_true")
            p.add_argument("--sop-instance-uid")
    args = parser.parse_args()
    if os.environ.get("PINHOLE_DICOM_DEBUG"):
        debug_logger()  # pynetdicom's PDU / DIMSE log on stderr
    {"echo": echo, "store": store}[args.command](args)


if __name__ == "__main__":
    main()
