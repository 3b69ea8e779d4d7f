"""Orthanc (Debian package `orthanc`) as a real PACS peer of pinhole-dicomnet, driven over
its REST API (crates/dicomnet/tests/orthanc.rs). Not for clinical use.

config OUT.json --http-port P --dicom-port P --storage DIR --modality AE HOST PORT
       [--dicomweb PLUGIN.so]
    Write a temporary Orthanc configuration: loopback only, no authentication, no
    plugins (or only the DICOMweb plugin of Debian's orthanc-dicomweb, served under
    /dicom-web/), called AE title checked, one modality (Pinhole's listener).
fill OUT_DIR FILES...
    Copies of FILES with their blank SOP / Study / Series UIDs filled as
    tests/py/dicom_net_peer.py fills them (pixel data untouched); prints {"files"}.
wait HTTP_PORT
    Wait (at most 60 s) until Orthanc answers GET /system.
upload HTTP_PORT FILES... [--fill-blank-uids]
    POST each file to /instances. --fill-blank-uids: the shared CT series has blank
    SOP / Study / Series UIDs in its data sets; fill them as tests/py/dicom_net_peer.py
    does (pixel data untouched).
instances HTTP_PORT
    Every stored instance: SOP Instance UID, SOP Class UID, transfer syntax, MD5 of the
    file as Orthanc stores it.
studies HTTP_PORT
    Every stored study as Orthanc's index has it: Study Instance UID, then each series'
    Series Instance UID, Modality and number of instances.
send HTTP_PORT MODALITY
    Ask Orthanc to C-ECHO, then C-STORE every instance it holds to MODALITY
    (synchronous).

Prints one JSON object; exit code 0 only on success.
"""
import argparse
import hashlib
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request

import pydicom

from dicom_net_peer import fill_blank_uids


def http(port, method, path, body=None, content_type="application/json"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=60) as response:
        data = response.read()
    return data


def http_json(port, method, path, payload=None):
    body = None if payload is None else json.dumps(payload).encode()
    return json.loads(http(port, method, path, body) or b"null")


def config(args):
    cfg = {
        "Name": "PINHOLE_TEST_PACS",
        "StorageDirectory": args.storage,
        "IndexDirectory": args.storage,
        "HttpPort": args.http_port,
        "DicomPort": args.dicom_port,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "DicomModalities": {"pinhole": [args.modality[0], args.modality[1], int(args.modality[2])]},
        "StableAge": 1,
    }
    if args.dicomweb:
        cfg["Plugins"] = [args.dicomweb]
        cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
    with open(args.out, "w") as f:
        json.dump(cfg, f, indent=1)
    print(json.dumps({"written": args.out}))


def wait(args):
    deadline = time.time() + 60
    last = None
    while time.time() < deadline:
        try:
            system = http_json(args.http_port, "GET", "/system")
            print(json.dumps({"version": system["Version"]}))
            return
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
            time.sleep(0.2)
    print(json.dumps({"error": f"Orthanc did not answer within 60 s: {last}"}))
    sys.exit(1)


def upload(args):
    stored = []
    for path in args.files:
        ds = pydicom.dcmread(path)
        if args.fill_blank_uids:
            fill_blank_uids(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        answer = json.loads(http(args.http_port, "POST", "/instances", buffer.getvalue(),
                                 "application/dicom"))
        stored.append(answer["Status"])
    print(json.dumps({"statuses": stored}))
    sys.exit(0 if all(s in ("Success", "AlreadyStored") for s in stored) else 1)


def fill(args):
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for path in args.files:
        ds = pydicom.dcmread(path)
        fill_blank_uids(ds)
        out = os.path.join(args.out_dir, os.path.basename(path))
        ds.save_as(out, enforce_file_format=True)
        written.append(out)
    print(json.dumps({"files": written}))


def instances(args):
    out = []
    for oid in http_json(args.http_port, "GET", "/instances"):
        tags = http_json(args.http_port, "GET", f"/instances/{oid}/simplified-tags")
        data = http(args.http_port, "GET", f"/instances/{oid}/file")
        ds = pydicom.dcmread(io.BytesIO(data))
        out.append({
            "sop_instance_uid": tags.get("SOPInstanceUID"),
            "sop_class_uid": tags.get("SOPClassUID"),
            "modality": tags.get("Modality"),
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
            "pixel_md5": hashlib.md5(ds.PixelData).hexdigest() if "PixelData" in ds else None,
        })
    out.sort(key=lambda x: x["sop_instance_uid"] or "")
    print(json.dumps({"instances": out}))


def studies(args):
    out = []
    for oid in http_json(args.http_port, "GET", "/studies"):
        study = http_json(args.http_port, "GET", f"/studies/{oid}")
        series = []
        for sid in study["Series"]:
            s = http_json(args.http_port, "GET", f"/series/{sid}")
            series.append({
                "series_uid": s["MainDicomTags"].get("SeriesInstanceUID"),
                "modality": s["MainDicomTags"].get("Modality"),
                "instances": len(s["Instances"]),
            })
        series.sort(key=lambda x: x["series_uid"] or "")
        out.append({"study_uid": study["MainDicomTags"].get("StudyInstanceUID"),
                    "series": series})
    out.sort(key=lambda x: x["study_uid"] or "")
    print(json.dumps({"studies": out}))


def send(args):
    http_json(args.http_port, "POST", f"/modalities/{args.modality}/echo", {})
    ids = http_json(args.http_port, "GET", "/instances")
    answer = http_json(args.http_port, "POST", f"/modalities/{args.modality}/store",
                       {"Resources": ids, "Synchronous": True})
    print(json.dumps({"sent": len(ids), "answer": answer}))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("config")
    p.add_argument("out")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--dicom-port", type=int, required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--modality", nargs=3, required=True, metavar=("AE", "HOST", "PORT"))
    p.add_argument("--dicomweb")
    p = sub.add_parser("fill")
    p.add_argument("out_dir")
    p.add_argument("files", nargs="+")
    for name in ("wait", "instances", "studies"):
        sub.add_parser(name).add_argument("http_port", type=int)
    p = sub.add_parser("upload")
    p.add_argument("http_port", type=int)
    p.add_argument("files", nargs="+")
    p.add_argument("--fill-blank-uids", action="store_true")
    p = sub.add_parser("send")
    p.add_argument("http_port", type=int)
    p.add_argument("modality")
    args = parser.parse_args()
    try:
        {"config": config, "fill": fill, "wait": wait, "upload": upload, "instances": instances,
         "studies": studies, "send": send}[args.command](args)
    except urllib.error.HTTPError as e:
        print(json.dumps({"error": f"HTTP {e.code}: {e.read().decode(errors='replace')}"}))
        sys.exit(1)


if __name__ == "__main__":
    main()
