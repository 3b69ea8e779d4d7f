"""pyigtl 0.3.4 as an independent OpenIGTLink peer of `pinhole serve` (crates/server tests).

client PORT           connect to our server, send NeedleTipToReference poses (header v1,
                      then v2 with metadata), print what came back (JSON).
us-frame PORT OUTDIR  connect twice; one client sends an 8-bit 2-D IMAGE "Image_Reference"
                      (an oblique ultrasound frame, LPS matrix: pyigtl's default), the
                      other waits for the fused CTReslice and LabelReslice (the server
                      answers every client but the sender); their pixels go to OUTDIR
                      (ct_reslice.u8, label_reslice.u8), the rest is printed (JSON).
server PORT OUTDIR    listen (127.0.0.1), send IMAGE (3-D int16, v1 and v2 with metadata),
                      STRING and POINT to the first client; print what was sent (JSON).
                      Prints "LISTENING" first so the test knows when to connect.
"""
import json
import os
import sys
import time

import numpy as np
import pyigtl


def wait_metrics(client, seq, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        m = client.wait_for_message("GuidanceMetrics", timeout=0.5)
        if m is not None:
            data = json.loads(m.string)
            if data["seq"] >= seq:
                return m, data
    raise SystemExit(f"no GuidanceMetrics with seq >= {seq}")


def pose(tip_ras, axis_ras):
    """4x4 with translation tip and z column = axis (x, y completing a rotation)."""
    z = np.asarray(axis_ras, float)
    z /= np.linalg.norm(z)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, tip_ras
    return m


def client(port, outdir=None):
    c = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=int(port))
    out = {}
    # Pose 1 (header v1): tip 3 mm to the patient's left of the line, 10 mm before target.
    m1 = pose([-3.0, 10.0, 0.0], [0.0, -1.0, 0.0])
    c.send_message(pyigtl.TransformMessage(m1, device_name="NeedleTipToReference"), wait=True)
    msg, data = wait_metrics(c, 1)
    out["v1"] = {"metrics": data, "header_version": msg.header_version}
    # Pose 2 (header v2 with metadata): on the line, 4 mm before the target.
    t2 = pyigtl.TransformMessage(pose([0.0, 4.0, 0.0], [0.0, -1.0, 0.0]), device_name="NeedleTipToReference")
    t2.header_version = 2
    t2.message_id = 7
    t2.metadata = {"TransformStatus": "OK"}
    c.send_message(t2, wait=True)
    msg, data = wait_metrics(c, 2)
    out["v2"] = {"metrics": data, "header_version": msg.header_version, "metadata": dict(msg.metadata)}
    plan = c.wait_for_message("PlanToRAS", timeout=5)
    out["plan_to_ras"] = np.asarray(plan.matrix, float).tolist()
    if outdir is not None:
        # A live 3-D int16 IMAGE (header v2 + metadata): the server relays it to the
        # other clients.
        vol = (np.arange(8 * 9 * 10, dtype=np.int64) * 37 % 4000 - 1000).astype(np.int16).reshape(8, 9, 10)
        vol.astype("<i2").tofile(os.path.join(outdir, "relay_i16.raw"))
        ijk = np.array([[0.5, 0, 0, 10.0], [0, 0.6, 0, -20.0], [0, 0, 1.25, 30.0], [0, 0, 0, 1]])
        img = pyigtl.ImageMessage(vol, ijk_to_world_matrix=ijk, device_name="Image_Reference")
        img.header_version = 2
        img.metadata = {"Modality": "US"}
        c.send_message(img, wait=True)
        out["image"] = {"ijk_to_world": ijk.tolist(), "shape_kji": list(vol.shape)}
        time.sleep(0.3)
    c.stop()
    print(json.dumps(out))


def us_frame(port, outdir):
    # Two clients, as PLUS (sends frames) and Slicer (shows the fusion): the server sends
    # the fused images to every client but the frame's sender.
    viewer = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=int(port))
    c = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=int(port))
    end = time.time() + 10
    while not (viewer.is_connected() and c.is_connected()) and time.time() < end:
        time.sleep(0.01)
    # 64 x 48 pixels; x along LPS (cos 20, sin 20, 0) at 0.5 mm, y downwards (LPS -z) at
    # 0.5 mm, origin LPS (-15, -10, 12): inside the 60 mm test phantom.
    a = np.radians(20.0)
    ijk = np.array([[0.5 * np.cos(a), 0.0, 0.0, -15.0],
                    [0.5 * np.sin(a), 0.0, 0.0, -10.0],
                    [0.0, -0.5, 0.0, 12.0],
                    [0.0, 0.0, 0.0, 1.0]])
    # The third column: the frame normal (unit), as PLUS sends one-slice images.
    normal = np.cross(ijk[:3, 0], ijk[:3, 1])
    ijk[:3, 2] = normal / np.linalg.norm(normal)
    frame = (np.arange(48 * 64) % 251).astype(np.uint8).reshape(1, 48, 64)  # (k, j, i)
    img = pyigtl.ImageMessage(frame, ijk_to_world_matrix=ijk, device_name="Image_Reference")
    c.send_message(img, wait=True)
    got = {}
    end = time.time() + 20
    while len(got) < 2 and time.time() < end:
        for name in ("CTReslice", "LabelReslice"):
            if name not in got:
                m = viewer.wait_for_message(name, timeout=0.2)
                if m is not None:
                    got[name] = m
    c.stop()
    viewer.stop()
    if len(got) < 2:
        raise SystemExit(f"fused images not received: {sorted(got)}")
    out = {"sent": {"ijk_to_world": ijk.tolist(), "world": img.world_coordinate_system,
                    "shape_kji": list(frame.shape)}}
    for name, file in (("CTReslice", "ct_reslice.u8"), ("LabelReslice", "label_reslice.u8")):
        m = got[name]
        pixels = np.ascontiguousarray(np.asarray(m.image)).astype(np.uint8)
        pixels.tofile(os.path.join(outdir, file))
        out[name] = {"ijk_to_world": np.asarray(m.ijk_to_world_matrix, float).tolist(),
                     "world": m.world_coordinate_system, "shape": list(np.asarray(m.image).shape),
                     "pixels": int(pixels.size)}
    print(json.dumps(out))


def server(port, outdir):
    s = pyigtl.OpenIGTLinkServer(port=int(port), local_server=True)
    print("LISTENING", flush=True)
    end = time.time() + 20
    while not s.is_connected():
        if time.time() > end:
            raise SystemExit("no client connected")
        time.sleep(0.01)
    rng = np.random.default_rng(5)
    vol = rng.integers(-1024, 3000, size=(12, 20, 30), dtype=np.int16)  # (k, j, i)
    c, sn = np.cos(np.radians(15)), np.sin(np.radians(15))
    ijk = np.array([[0.7 * c, -0.8 * sn, 0, -40.0], [0.7 * sn, 0.8 * c, 0, 25.5], [0, 0, 2.5, -110.0], [0, 0, 0, 1]])
    vol.astype("<i2").tofile(os.path.join(outdir, "volume_i16.raw"))
    sent = []
    img = pyigtl.ImageMessage(vol, ijk_to_world_matrix=ijk, device_name="CT_v1")
    s.send_message(img, wait=True)
    sent.append({"type": "IMAGE", "device": "CT_v1", "header_version": 1, "ijk_to_world": ijk.tolist(), "shape_kji": list(vol.shape), "world": img.world_coordinate_system})
    img2 = pyigtl.ImageMessage(vol, ijk_to_world_matrix=ijk, device_name="CT_v2")
    img2.header_version = 2
    img2.message_id = 42
    img2.metadata = {"Modality": "CT", "Patient": "phantom"}
    s.send_message(img2, wait=True)
    sent.append({"type": "IMAGE", "device": "CT_v2", "header_version": 2, "message_id": 42, "metadata": img2.metadata, "ijk_to_world": ijk.tolist(), "shape_kji": list(vol.shape), "world": img2.world_coordinate_system})
    st = pyigtl.StringMessage("needle inserted", device_name="Note")
    st.header_version = 2
    st.metadata = {"Source": "pyigtl"}
    s.send_message(st, wait=True)
    sent.append({"type": "STRING", "device": "Note", "header_version": 2, "string": "needle inserted", "metadata": st.metadata})
    pts = pyigtl.PointMessage(positions=[[1.5, -2.25, 30.0], [-40.0, 12.0, -7.5]], names=["Entry", "Target"],
                              rgba_colors=[[255, 0, 0, 255], [0, 255, 0, 128]], diameters=[2.0, 3.5],
                              groups=["Fiducial", "Fiducial"], owners=["CT_v1", "CT_v1"], device_name="Plan")
    s.send_message(pts, wait=True)
    sent.append({"type": "POINT", "device": "Plan", "header_version": 1,
                 "positions": [[1.5, -2.25, 30.0], [-40.0, 12.0, -7.5]], "names": ["Entry", "Target"],
                 "diameters": [2.0, 3.5], "rgba": [[255, 0, 0, 255], [0, 255, 0, 128]]})
    time.sleep(0.5)
    s.stop()
    print(json.dumps(sent), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif sys.argv[1] == "us-frame":
        us_frame(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "server":
        server(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
