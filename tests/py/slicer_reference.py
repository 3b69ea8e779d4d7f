#!/usr/bin/env python3
"""Independent readers for the Slicer-facing files Pinhole writes; prints JSON.

  markups FILE  validate a .mrk.json against tests/fixtures/markups-schema-v1.0.3.json
                with jsonschema: {"valid", "errors", "points": [{markup, type,
                coordinateSystem, label, position}]} (positions as stored in the file)
  seg FILE      read a .seg.nrrd with slicerio: {"segments": [{id, name, labelValue,
                color, extent, layer}], "ijkToLPS", "shape", "dtype",
                "voxels": {label: count}, "bbox": {label: [i0, i1, j0, j1, k0, k1]}}
  vtk FILE      parse a legacy ASCII VTK POLYDATA file in plain Python: {"header",
                "points", "lines", "scalars": {name: values}}
  itk-transform FILE POINTS
                read an ITK transform file with SimpleITK (ITK's own reader, as Slicer
                and elastix use) and map each LPS point of the JSON list POINTS:
                {"type": [transform class names], "points": [[x, y, z], ...]}
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "tests" / "fixtures" / "markups-schema-v1.0.3.json"


def markups(path):
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    document = json.loads(Path(path).read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = [e.message for e in validator_class(schema).iter_errors(document)]
    points = []
    for markup in document.get("markups", []):
        for point in markup.get("controlPoints", []):
            points.append(
                {
                    "markup": markup.get("name"),
                    "type": markup.get("type"),
                    "coordinateSystem": markup.get("coordinateSystem", "LPS"),
                    "label": point.get("label"),
                    "position": point.get("position"),
                }
            )
    return {"valid": not errors, "errors": errors, "points": points}


def seg(path):
    import numpy as np
    import slicerio

    segmentation = slicerio.read_segmentation(str(path))
    voxels = np.asarray(segmentation["voxels"])
    counts = {}
    bbox = {}
    for value in np.unique(voxels):
        if value == 0:
            continue
        where = np.argwhere(voxels == value)
        counts[str(int(value))] = int(len(where))
        lo, hi = where.min(axis=0), where.max(axis=0)
        bbox[str(int(value))] = [int(x) for pair in zip(lo, hi) for x in pair]
    segments = [
        {
            "id": s.get("id"),
            "name": s.get("name"),
            "labelValue": s.get("labelValue"),
            "color": s.get("color"),
            "extent": s.get("extent"),
            "layer": s.get("layer"),
        }
        for s in segmentation["segments"]
    ]
    return {
        "segments": segments,
        "ijkToLPS": np.asarray(segmentation["ijkToLPS"]).tolist(),
        "shape": list(voxels.shape),
        "dtype": str(voxels.dtype),
        "voxels": counts,
        "bbox": bbox,
    }


def vtk(path):
    lines = Path(path).read_text().splitlines()
    if not lines[0].startswith("# vtk DataFile Version"):
        raise SystemExit(f"{path}: not a legacy VTK file")
    header = {"version": lines[0].split()[-1], "title": lines[1], "format": lines[2].strip()}
    if header["format"] != "ASCII" or lines[3].split() != ["DATASET", "POLYDATA"]:
        raise SystemExit(f"{path}: expected ASCII POLYDATA")
    tokens = " ".join(lines[4:]).split()
    result = {"header": header, "points": [], "lines": [], "scalars": {}}
    n_points = 0
    pos = 0
    while pos < len(tokens):
        keyword = tokens[pos]
        if keyword == "POINTS":
            n_points = int(tokens[pos + 1])
            values = [float(t) for t in tokens[pos + 3 : pos + 3 + 3 * n_points]]
            result["points"] = [values[i : i + 3] for i in range(0, len(values), 3)]
            pos += 3 + 3 * n_points
        elif keyword == "LINES":
            count, size = int(tokens[pos + 1]), int(tokens[pos + 2])
            flat = [int(t) for t in tokens[pos + 3 : pos + 3 + size]]
            at = 0
            for _ in range(count):
                n = flat[at]
                result["lines"].append(flat[at + 1 : at + 1 + n])
                at += n + 1
            if at != size:
                raise SystemExit(f"{path}: LINES size {size} does not match counts ({at})")
            pos += 3 + size
        elif keyword == "POINT_DATA":
            if int(tokens[pos + 1]) != n_points:
                raise SystemExit(f"{path}: POINT_DATA count differs from POINTS")
            pos += 2
        elif keyword == "SCALARS":
            name = tokens[pos + 1]
            components = int(tokens[pos + 3]) if tokens[pos + 3] != "LOOKUP_TABLE" else 1
            pos += 4 if tokens[pos + 3] != "LOOKUP_TABLE" else 3
            if tokens[pos] != "LOOKUP_TABLE":
                raise SystemExit(f"{path}: SCALARS {name} without LOOKUP_TABLE")
            pos += 2
            count = n_points * components
            result["scalars"][name] = [float(t) for t in tokens[pos : pos + count]]
            pos += count
        else:
            raise SystemExit(f"{path}: unexpected keyword {keyword!r}")
    return result


def itk_transform(path, points_path):
    import SimpleITK as sitk

    transform = sitk.ReadTransform(str(path))
    names = [transform.GetName()]
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        names += [composite.GetNthTransform(i).GetName() for i in range(composite.GetNumberOfTransforms())]
    points = json.loads(Path(points_path).read_text())
    return {"type": names, "points": [list(transform.TransformPoint([float(v) for v in p])) for p in points]}


def main():
    commands = {"markups": markups, "seg": seg, "vtk": vtk, "itk-transform": itk_transform}
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        raise SystemExit(__doc__)
    json.dump(commands[sys.argv[1]](*sys.argv[2:]), sys.stdout)
    print()


if __name__ == "__main__":
    main()
