"""pynetdicom as an independent DICOM peer of pinhole-dicomnet (crates/dicomnet tests):
an SCU for its listener (echo, store) and an SCP for its push (serve).

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

Prints JSON: {"accepted": bool, "statuses": [int, ...], "retried": [index, ...]} (and
"rejected" details when the association was refused). "retried": instances resent on a new
association after pynetdicom lost their response (at most 2; see send_one's caller). Exit code 0 only when the association was accepted and every
status is success (0x0000); 3 when the association was rejected or failed.

serve --out DIR [--port 0] [--ae AE] [--count N] [--timeout S] [--only-uncompressed]
      [--source FILES...]
    A storage SCP for pinhole-dicomnet's push: every storage SOP class of pynetdicom
    (AllStoragePresentationContexts) with every transfer syntax it knows (JPEG 2000
    lossless 1.2.840.10008.1.2.4.90 included), plus Verification. --only-uncompressed:
    storage classes in Explicit VR Little Endian only. Prints {"port": P} as its first
    line (the chosen port when --port is 0), saves each received instance as
    DIR/<SOPInstanceUID>.dcm (the bytes as received, with pynetdicom's file meta group),
    and ends once N instances arrived and their associations ended, or after --timeout
    seconds. Then prints one JSON line:
    {"received": [SOP instance UIDs, in order], "transfer_syntaxes": [...], "echoes": n,
     "timed_out": bool, "studies": [...], "series": [...],
     "pixel_md5": {uid: md5 of the pixel array decoded from the saved file},
     "source_pixel_md5": {uid: the same for each --source file, keyed by its file meta
     group's SOP Instance UID}}
    Pixel arrays are decoded by pydicom (pylibjpeg for JPEG 2000); the md5 covers dtype,
    shape and bytes. Exit code 0.

qr --files FILES... --move-dest AE=HOST:PORT [--port 0] [--ae PYQR] [--timeout S]
    A Query/Retrieve SCP (Study Root C-FIND and C-MOVE) over FILES (their blank UIDs
    filled as by store --fill-blank-uids): C-FIND matches single values, `*`/`?`
    wildcards and universal (empty) keys at STUDY, SERIES and IMAGE level and answers
    the keys asked, with Number of Study / Series Related Series / Instances and Modalities
    in Study computed; C-MOVE sends the matching instances to the --move-dest AE (any
    other destination: 0xA801). Prints {"port": P}, serves for --timeout seconds (or until
    killed), then prints {"finds": n, "moves": n, "sent": n}.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import time

import pydicom
import pydicom.config
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import (AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config,
                        debug_logger, evt)
from pynetdicom.sop_class import Verification

TIMEOUT_S = 30
# A C-STORE-RSP normally arrives within milliseconds; a lost one (see store) is resent after this.
DIMSE_TIMEOUT_S = 15


def make_ae(calling):
    ae = AE(ae_title=calling)
    ae.acse_timeout = TIMEOUT_S
    ae.dimse_timeout = DIMSE_TIMEOUT_S
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


def finish(assoc, statuses, retried=()):
    assoc.release()
    print(json.dumps({"accepted": True, "statuses": statuses, "retried": list(retried)}))
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
    statuses, retried = [], []
    for index, ds in enumerate(datasets):
        status = send_one(assoc, ds)
        if status == NO_RESPONSE and len(retried) < MAX_RETRIES:
            # pynetdicom 3.0 under CPU load sometimes loses a C-STORE-RSP that reached
            # its socket (seen with `ss`: every response byte delivered and acknowledged,
            # the SCU still waiting), then aborts after dimse_timeout. Resend that
            # instance on a new association, as a real SCU would, and say so.
            retried.append(index)
            if assoc.is_established:
                assoc.abort()
            assoc = associate(ae, args)
            status = send_one(assoc, ds)
        statuses.append(status)
    finish(assoc, statuses, retried)


NO_RESPONSE = -1
MAX_RETRIES = 2


def send_one(assoc, ds):
    if not assoc.is_established:
        return NO_RESPONSE
    return status_of(assoc.send_c_store(ds))


def pixel_md5(path):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    digest = hashlib.md5()
    digest.update(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(arr.tobytes())
    return ds, digest.hexdigest()


def serve(args):
    os.makedirs(args.out, exist_ok=True)
    ae = AE(ae_title=args.ae)
    ae.acse_timeout = TIMEOUT_S
    ae.dimse_timeout = TIMEOUT_S
    ae.network_timeout = TIMEOUT_S
    syntaxes = [ExplicitVRLittleEndian] if args.only_uncompressed else ALL_TRANSFER_SYNTAXES
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)
    ae.add_supported_context(Verification, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])

    lock = threading.Lock()
    received, transfer_syntaxes, echoes = [], [], []
    enough = threading.Event()

    def on_store(event):
        uid = str(event.request.AffectedSOPInstanceUID)
        path = os.path.join(args.out, f"{uid}.dcm")
        with open(path, "wb") as f:
            f.write(event.encoded_dataset(include_meta=True))
        with lock:
            received.append(uid)
            transfer_syntaxes.append(str(event.context.transfer_syntax))
            if len(received) >= args.count:
                enough.set()
        return 0x0000

    def on_echo(event):
        with lock:
            echoes.append(1)
        return 0x0000

    server = ae.start_server(("127.0.0.1", args.port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store),
                                           (evt.EVT_C_ECHO, on_echo)])
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    deadline = time.monotonic() + args.timeout
    timed_out = True
    # Done once N instances arrived and the association that sent them has ended (the
    # last C-STORE-RSP is sent and the release answered).
    while time.monotonic() < deadline:
        if enough.is_set() and not ae.active_associations:
            timed_out = False
            break
        time.sleep(0.05)
    server.shutdown()

    out = {"received": received, "transfer_syntaxes": transfer_syntaxes,
           "echoes": len(echoes), "timed_out": timed_out, "pixel_md5": {},
           "source_pixel_md5": {}}
    studies, series = set(), set()
    for uid in received:
        ds, md5 = pixel_md5(os.path.join(args.out, f"{uid}.dcm"))
        out["pixel_md5"][uid] = md5
        studies.add(str(ds.get("StudyInstanceUID", "")))
        series.add(str(ds.get("SeriesInstanceUID", "")))
    out["studies"], out["series"] = sorted(studies), sorted(series)
    for path in args.source:
        ds, md5 = pixel_md5(path)
        out["source_pixel_md5"][str(ds.file_meta.MediaStorageSOPInstanceUID)] = md5
    print(json.dumps(out), flush=True)


def matches(value, key):
    """DICOM C-FIND matching of one attribute: universal, wildcard or single value."""
    if key in (None, ""):
        return True
    value = "" if value is None else str(value)
    if "*" in key or "?" in key:
        import fnmatch
        return fnmatch.fnmatchcase(value, key.replace("[", "[[]"))
    return value == str(key)


def qr(args):
    from pynetdicom.sop_class import (StudyRootQueryRetrieveInformationModelFind,
                                      StudyRootQueryRetrieveInformationModelMove)
    datasets = []
    for path in args.files:
        ds = pydicom.dcmread(path)
        fill_blank_uids(ds)
        datasets.append((path, ds))
    dest_ae, _, dest_addr = args.move_dest.partition("=")
    dest_host, _, dest_port = dest_addr.rpartition(":")
    ae = AE(ae_title=args.ae)
    ae.acse_timeout = TIMEOUT_S
    ae.dimse_timeout = TIMEOUT_S
    ae.network_timeout = TIMEOUT_S
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_supported_context(Verification)
    from pynetdicom.sop_class import CTImageStorage
    from pydicom.uid import JPEG2000Lossless
    ae.add_requested_context(CTImageStorage, [JPEG2000Lossless, ExplicitVRLittleEndian])
    counts = {"finds": 0, "moves": 0, "sent": 0}
    level_keys = {"STUDY": ["StudyInstanceUID"],
                  "SERIES": ["StudyInstanceUID", "SeriesInstanceUID"],
                  "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]}

    computed = {"NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
                "NumberOfStudyRelatedSeries", "ModalitiesInStudy"}

    def selected(identifier):
        level = str(identifier.get("QueryRetrieveLevel", ""))
        if level not in level_keys:
            return level, None
        keys = [e for e in identifier
                if e.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet", "")]
        chosen = []
        for path, ds in datasets:
            ok = True
            for e in keys:
                if e.keyword == "ModalitiesInStudy":
                    wanted = [] if e.value in (None, "") else list(e.VM > 1 and e.value or [e.value])
                    ok = ok and (not wanted or str(ds.Modality) in [str(w) for w in wanted])
                elif e.keyword in computed:
                    continue
                elif isinstance(e.value, (list, pydicom.multival.MultiValue)):
                    ok = ok and str(ds.get(e.keyword, "")) in [str(v) for v in e.value]
                else:
                    ok = ok and matches(ds.get(e.keyword), e.value)
            if ok:
                chosen.append((path, ds))
        return level, chosen

    def on_find(event):
        counts["finds"] += 1
        identifier = event.identifier
        level, chosen = selected(identifier)
        if chosen is None:
            yield 0xC000, None
            return
        groups = {}
        for path, ds in chosen:
            key = tuple(str(ds.get(k, "")) for k in level_keys[level])
            groups.setdefault(key, []).append(ds)
        for key, members in groups.items():
            if event.is_cancelled:
                yield 0xFE00, None
                return
            answer = pydicom.Dataset()
            answer.QueryRetrieveLevel = level
            first = members[0]
            for e in identifier:
                if e.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet", ""):
                    continue
                if e.keyword == "NumberOfStudyRelatedInstances" or e.keyword == "NumberOfSeriesRelatedInstances":
                    setattr(answer, e.keyword, str(len(members)))
                elif e.keyword == "NumberOfStudyRelatedSeries":
                    answer.NumberOfStudyRelatedSeries = str(len({str(m.SeriesInstanceUID) for m in members}))
                elif e.keyword == "ModalitiesInStudy":
                    answer.ModalitiesInStudy = sorted({str(m.Modality) for m in members})
                elif e.keyword in first:
                    answer[e.tag] = first[e.tag]
                else:
                    answer[e.tag] = pydicom.DataElement(e.tag, e.VR, None)
            for k in level_keys[level]:
                setattr(answer, k, str(first.get(k)))
            yield 0xFF00, answer

    def on_move(event):
        counts["moves"] += 1
        destination = event.move_destination
        if isinstance(destination, bytes):
            destination = destination.decode("ascii", "replace")
        if destination.strip() != dest_ae:
            yield None, None
            return
        level, chosen = selected(event.identifier)
        if chosen is None:
            yield dest_host, int(dest_port)
            yield 0
            yield 0xC000, None
            return
        yield dest_host, int(dest_port)
        yield len(chosen)
        for path, ds in chosen:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            counts["sent"] += 1
            yield 0xFF00, ds

    server = ae.start_server(("127.0.0.1", args.port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_MOVE, on_move),
                                           (evt.EVT_C_ECHO, lambda e: 0x0000)])
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.shutdown()
        print(json.dumps(counts), flush=True)


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
    p = sub.add_parser("serve")
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ae", default="PYNETDICOM")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--only-uncompressed", action="store_true")
    p.add_argument("--source", nargs="*", default=[])
    p = sub.add_parser("qr")
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--move-dest", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ae", default="PYQR")
    p.add_argument("--timeout", type=float, default=150.0)
    args = parser.parse_args()
    if os.environ.get("PINHOLE_DICOM_DEBUG"):
        debug_logger()  # pynetdicom's PDU / DIMSE log on stderr
    {"echo": echo, "store": store, "serve": serve, "qr": qr}[args.command](args)


if __name__ == "__main__":
    main()
