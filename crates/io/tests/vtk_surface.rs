//! `vtk::write_surface`: a mask's triangle surface with a per-vertex scalar, parsed back
//! from the text by a small reader written here from the legacy VTK format description.

use std::path::Path;

use pinhole_io::vtk::write_surface;
use pinhole_io::ErrorKind;
use pinhole_volume::surface::{mask_surface, TriangleMesh};
use pinhole_volume::{Grid, Volume};

/// What a legacy ASCII POLYDATA file holds.
#[derive(Debug, Default)]
struct Parsed {
    title: String,
    points: Vec<[f64; 3]>,
    polygons: Vec<Vec<u32>>,
    scalars: Option<(String, Vec<f64>)>,
}

/// Parses the keywords this writer may emit, checking every count the file states.
fn parse(path: &Path) -> Parsed {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("# vtk DataFile Version 4.2"));
    let title = lines.next().unwrap().to_string();
    assert_eq!(lines.next(), Some("ASCII"));
    assert_eq!(lines.next(), Some("DATASET POLYDATA"));
    let tokens: Vec<&str> = lines.flat_map(str::split_whitespace).collect();
    let mut parsed = Parsed {
        title,
        ..Parsed::default()
    };
    let mut at = 0;
    let number = |t: &str| t.parse::<f64>().unwrap();
    while at < tokens.len() {
        match tokens[at] {
            "POINTS" => {
                let n: usize = tokens[at + 1].parse().unwrap();
                assert_eq!(tokens[at + 2], "double");
                at += 3;
                parsed.points = (0..n)
                    .map(|p| [0, 1, 2].map(|c| number(tokens[at + 3 * p + c])))
                    .collect();
                at += 3 * n;
            }
            "POLYGONS" => {
                let count: usize = tokens[at + 1].parse().unwrap();
                let size: usize = tokens[at + 2].parse().unwrap();
                at += 3;
                let end = at + size;
                for _ in 0..count {
                    let n: usize = tokens[at].parse().unwrap();
                    let ids = tokens[at + 1..at + 1 + n]
                        .iter()
                        .map(|t| t.parse().unwrap());
                    parsed.polygons.push(ids.collect());
                    at += n + 1;
                }
                assert_eq!(at, end, "POLYGONS size does not match its cells");
            }
            "POINT_DATA" => {
                let n: usize = tokens[at + 1].parse().unwrap();
                assert_eq!(n, parsed.points.len());
                assert_eq!(&tokens[at + 2..at + 3], ["SCALARS"]);
                let name = tokens[at + 3].to_string();
                assert_eq!(
                    &tokens[at + 4..at + 8],
                    ["double", "1", "LOOKUP_TABLE", "default"]
                );
                at += 8;
                let values = tokens[at..at + n].iter().map(|t| number(t)).collect();
                parsed.scalars = Some((name, values));
                at += n;
            }
            other => panic!("unexpected keyword {other:?}"),
        }
    }
    parsed
}

/// A two-voxel-thick L on an oblique, anisotropic, reflected grid: a surface with
/// non-round coordinates.
fn l_shaped_surface() -> TriangleMesh {
    let (c, s) = (0.8, 0.6);
    let direction = [[c, 0.0, -s], [0.0, -1.0, 0.0], [s, 0.0, c]];
    let grid = Grid::new([5, 4, 3], [0.7, 0.9, 2.5], [-12.3, 40.1, -7.7], direction).unwrap();
    let mut mask = Volume::filled(grid.clone(), false);
    for ijk in [[1, 1, 1], [2, 1, 1], [3, 1, 1], [1, 2, 1], [1, 2, 2]] {
        mask.data_mut()[grid.offset(ijk)] = true;
    }
    mask_surface(&mask)
}

#[test]
fn surface_with_scalars_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tumour_margin.vtk");
    let mesh = l_shaped_surface();
    assert!(mesh.triangles.len() > 20);
    // A margin-like value per vertex: signed distance to a plane, non-round numbers.
    let margin_mm: Vec<f64> = mesh
        .vertices_lps
        .iter()
        .map(|v| 0.3 * v[0] - 0.7 * v[1] + 0.1 * v[2] + 1.0 / 3.0)
        .collect();
    write_surface(&path, &mesh, Some(("margin_mm", &margin_mm))).unwrap();

    let parsed = parse(&path);
    assert!(parsed.title.contains("SPACE=LPS"), "{}", parsed.title);
    assert_eq!(parsed.points, mesh.vertices_lps);
    let triangles: Vec<Vec<u32>> = mesh.triangles.iter().map(|t| t.to_vec()).collect();
    assert_eq!(parsed.polygons, triangles);
    assert_eq!(parsed.scalars, Some(("margin_mm".to_string(), margin_mm)));
}

#[test]
fn surface_without_scalars_has_no_point_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("surface.vtk");
    let mesh = l_shaped_surface();
    write_surface(&path, &mesh, None).unwrap();
    let parsed = parse(&path);
    assert_eq!(parsed.points.len(), mesh.vertices_lps.len());
    assert_eq!(parsed.polygons.len(), mesh.triangles.len());
    assert!(parsed.scalars.is_none());

    let empty = dir.path().join("empty.vtk");
    write_surface(&empty, &TriangleMesh::default(), Some(("margin_mm", &[]))).unwrap();
    let parsed = parse(&empty);
    assert!(parsed.points.is_empty() && parsed.polygons.is_empty());
    assert_eq!(parsed.scalars, Some(("margin_mm".to_string(), vec![])));
}

/// A named per-vertex array, as `write_surface` takes it.
type Scalars<'a> = Option<(&'a str, &'a [f64])>;

#[test]
fn surface_refuses_bad_scalars_and_indices_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refused.vtk");
    let mesh = l_shaped_surface();
    let n = mesh.vertices_lps.len();
    let mut nan = vec![1.0; n];
    nan[3] = f64::NAN;
    let mut infinite = vec![1.0; n];
    infinite[n - 1] = f64::INFINITY;
    let short = vec![1.0; n - 1];
    let good = vec![1.0; n];
    let mut bad_index = mesh.clone();
    bad_index.triangles[0][1] = n as u32;
    let mut bad_vertex = mesh.clone();
    bad_vertex.vertices_lps[2][1] = f64::NEG_INFINITY;

    let cases: [(&TriangleMesh, Scalars, &str); 6] = [
        (&mesh, Some(("margin_mm", &short)), "values for"),
        (&mesh, Some(("margin_mm", &nan)), "non-finite"),
        (&mesh, Some(("margin_mm", &infinite)), "non-finite"),
        (&mesh, Some(("margin mm", &good)), "whitespace"),
        (&bad_index, None, "refers to vertex"),
        (&bad_vertex, None, "not finite"),
    ];
    for (mesh, scalars, what) in cases {
        let err = write_surface(&path, mesh, scalars).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::InvalidInput(_)), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("refused.vtk") && message.contains(what),
            "{message}"
        );
        assert!(!path.exists());
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "left-over files"
    );
}
