#!/usr/bin/env python3
"""pyigtl 0.3.4 as an independent OpenIGTLink peer, on bytes (no sockets); prints JSON.

  write DIR     pack messages with pyigtl into DIR/*.bin and print what was packed:
                {name: {"file", "type", "device", "timestamp", "header_version",
                "message_id", "metadata", ...content}}; the IMAGE voxels also go to
                DIR/<name>.pixels (little-endian, i fastest) for a bit-exact check.
  read FILE...  unpack each file with pyigtl (MessageBase.parse_header + unpack) and
                print [{"file", "type", "device", "timestamp", "header_version",
                "message_id", "metadata", "crc_ok", ...content}]; pyigtl does not check
                the CRC, so crc_ok is computed here with crcmod (CRC-64/ECMA-182).

Content keys: TRANSFORM "matrix" (4×4 row-major); IMAGE "shape_kji", "dtype",
"ijk_to_world" (4×4, pyigtl's origin-based matrix), "world" ("lps"/"ras"), "voxels"
(flat, i fastest); STRING "string"; POINT "points" [{name, group, rgba, position,
diameter, owner}].
"""

import json
import sys
from pathlib import Path

import numpy as np
import pyigtl
from pyigtl.messages import CRC64, MessageBase

TIMESTAMP = 1_700_000_000.5


def _meta(msg, header_version, message_id, metadata):
    msg.header_version = header_version
    msg.message_id = message_id
    msg.metadata = dict(metadata)
    return msg


def _common(msg, file):
    return {
        "file": file,
        "type": msg.message_type,
        "device": msg.device_name,
        "timestamp": msg.timestamp,
        "header_version": msg.header_version,
        "message_id": msg.message_id,
        "metadata": dict(msg.metadata),
    }


def _content(msg):
    if msg.message_type == "TRANSFORM":
        return {"matrix": np.asarray(msg.matrix, dtype=float).tolist()}
    if msg.message_type == "IMAGE":
        image = np.asarray(msg.image)
        return {
            "shape_kji": list(image.shape),
            "dtype": image.dtype.name,
            "ijk_to_world": np.asarray(msg.ijk_to_world_matrix, dtype=float).tolist(),
            "world": msg.world_coordinate_system,
            "voxels": image.astype(float).ravel().tolist(),
        }
    if msg.message_type == "STRING":
        return {"string": msg.string}
    if msg.message_type == "POINT":
        return {
            "points": [
                {
                    "name": msg.names[i],
                    "group": msg.groups[i],
                    "rgba": list(map(int, msg.rgba_colors[i])),
                    "position": [float(v) for v in msg.positions[i]],
                    "diameter": float(msg.diameters[i]),
                    "owner": msg.owners[i],
                }
                for i in range(len(msg.names))
            ]
        }
    return {}


def write(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}

    def save(name, msg, extra=None):
        (folder / f"{name}.bin").write_bytes(msg.pack())
        entry = _common(msg, f"{name}.bin")
        entry.update(_content(msg))
        entry.update(extra or {})
        out[name] = entry

    # A rigid transform: 30° about z, then a translation (mm).
    a = np.deg2rad(30.0)
    matrix = np.array(
        [
            [np.cos(a), -np.sin(a), 0.0, 10.0],
            [np.sin(a), np.cos(a), 0.0, -20.5],
            [0.0, 0.0, 1.0, 30.25],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    save("transform_v1", pyigtl.TransformMessage(matrix, timestamp=TIMESTAMP, device_name="NeedleToReference"))
    save(
        "transform_v2",
        _meta(
            pyigtl.TransformMessage(matrix, timestamp=TIMESTAMP, device_name="NeedleToReference"),
            2,
            7,
            {"TransformStatus": "OK", "Note": "pinhole"},
        ),
    )

    # A 3-D int16 volume, axes (k, j, i) = (3, 5, 7), with negative values and a
    # rotated, anisotropic, translated IJK→world (pyigtl's default world is LPS).
    voxels = (np.arange(3 * 5 * 7, dtype=np.int32) * 937 - 30000).astype(np.int16).reshape(3, 5, 7)
    b = np.deg2rad(20.0)
    ijk_to_world = np.array(
        [
            [0.8 * np.cos(b), -0.9 * np.sin(b), 0.0, -12.5],
            [0.8 * np.sin(b), 0.9 * np.cos(b), 0.0, 40.0],
            [0.0, 0.0, 2.5, -100.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    for name, world, version, metadata in [
        ("image_v1", None, 1, {}),
        ("image_ras_v2", "ras", 2, {"Modality": "CT"}),
    ]:
        msg = pyigtl.ImageMessage(
            voxels, ijk_to_world_matrix=ijk_to_world, world_coordinate_system=world,
            timestamp=TIMESTAMP, device_name="Image_Reference",
        )
        _meta(msg, version, 3, metadata)
        (folder / f"{name}.pixels").write_bytes(voxels.astype("<i2").tobytes())
        save(name, msg, {"pixels_file": f"{name}.pixels"})

    save("string_v1", pyigtl.StringMessage("Hello from pyigtl", timestamp=TIMESTAMP, device_name="Text"))
    save(
        "string_v2",
        _meta(pyigtl.StringMessage("<Command Name=\"Start\"/>", timestamp=TIMESTAMP, device_name="Text"), 2, 42, {"Encoding": "xml"}),
    )
    save(
        "point_v1",
        pyigtl.PointMessage(
            positions=[[1.5, -2.0, 3.25], [10.0, 20.0, 30.0], [-7.0, 0.0, 0.5]],
            names=["Entry", "Target", "Landmark-3"],
            rgba_colors=[[255, 0, 0, 255], [0, 255, 0, 128], [0, 0, 255, 64]],
            diameters=[1.0, 2.5, 0.0],
            groups=["Fiducial"] * 3,
            owners=["Image_Reference", "", "Image_Reference"],
            timestamp=TIMESTAMP,
            device_name="Plan",
        ),
    )
    json.dump(out, sys.stdout, indent=1)


def read(files):
    results = []
    for file in files:
        data = Path(file).read_bytes()
        header = data[: MessageBase.IGTL_HEADER_SIZE]
        fields = MessageBase.parse_header(header)
        body = data[MessageBase.IGTL_HEADER_SIZE : MessageBase.IGTL_HEADER_SIZE + fields["body_size"]]
        crc_in_header = int.from_bytes(header[50:58], "big")
        msg = MessageBase.create_message(fields["message_type"])
        if msg is None:
            raise SystemExit(f"pyigtl has no class for {fields['message_type']}")
        msg.unpack(fields, body)
        entry = _common(msg, str(file))
        entry["crc_ok"] = CRC64(body) == crc_in_header
        entry["body_size"] = fields["body_size"]
        entry["length_ok"] = len(data) == MessageBase.IGTL_HEADER_SIZE + fields["body_size"]
        entry.update(_content(msg))
        results.append(entry)
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "read":
        read(sys.argv[2:])
    else:
        raise SystemExit(__doc__)
