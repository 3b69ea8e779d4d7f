//! Legacy VTK polydata writer (ASCII, file version 4.2) for polylines such as vessel
//! centrelines and for triangle surfaces such as a tumour coloured by its ablative
//! margin, tagged `SPACE=LPS` the way 3D Slicer writes and reads it.

use std::fmt::Write as _;
use std::path::Path;

use pinhole_volume::surface::TriangleMesh;

use crate::{Error, ErrorKind, Result};

/// Polylines over a shared point list, with optional per-point scalars (e.g. radius).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolyLines {
    /// Points, LPS mm.
    pub points_lps: Vec<[f64; 3]>,
    /// Each polyline as indices into `points_lps`.
    pub lines: Vec<Vec<usize>>,
    /// Named arrays with one value per point (names without whitespace).
    pub point_scalars: Vec<(String, Vec<f64>)>,
}

/// Writes `polylines` as a legacy ASCII `.vtk` POLYDATA file.
pub fn write_polylines(path: &Path, polylines: &PolyLines) -> Result<()> {
    validate(polylines).map_err(|m| Error::new(path, ErrorKind::InvalidInput(m)))?;
    crate::atomic::write_atomic(path, render(polylines).as_ref())
}

/// Checks indices, array lengths, names and finiteness.
fn validate(p: &PolyLines) -> Result<(), String> {
    let n = p.points_lps.len();
    if let Some(i) = p
        .points_lps
        .iter()
        .position(|x| x.iter().any(|v| !v.is_finite()))
    {
        return Err(format!("point {i} is not finite: {:?}", p.points_lps[i]));
    }
    for (l, line) in p.lines.iter().enumerate() {
        if line.is_empty() {
            return Err(format!("line {l} has no points"));
        }
        if let Some(&bad) = line.iter().find(|&&i| i >= n) {
            return Err(format!(
                "line {l} refers to point {bad} but there are {n} points"
            ));
        }
    }
    for (name, values) in &p.point_scalars {
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(format!(
                "scalar array name '{name}' is empty or has whitespace"
            ));
        }
        if values.len() != n {
            return Err(format!(
                "scalar array '{name}' has {} values for {n} points",
                values.len()
            ));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(format!("scalar array '{name}' has non-finite values"));
        }
    }
    Ok(())
}

/// The file's text. `f64` `Display` prints the shortest string that reads back exactly.
fn render(p: &PolyLines) -> String {
    let mut out = String::new();
    out.push_str("# vtk DataFile Version 4.2\n");
    out.push_str("Pinhole output. SPACE=LPS\n");
    out.push_str("ASCII\nDATASET POLYDATA\n");
    // Writing into a String cannot fail.
    let _ = writeln!(out, "POINTS {} double", p.points_lps.len());
    for [x, y, z] in &p.points_lps {
        let _ = writeln!(out, "{x} {y} {z}");
    }
    if !p.lines.is_empty() {
        let size: usize = p.lines.iter().map(|l| l.len() + 1).sum();
        let _ = writeln!(out, "LINES {} {size}", p.lines.len());
        for line in &p.lines {
            let _ = write!(out, "{}", line.len());
            for i in line {
                let _ = write!(out, " {i}");
            }
            out.push('\n');
        }
    }
    if !p.point_scalars.is_empty() {
        let _ = writeln!(out, "POINT_DATA {}", p.points_lps.len());
        for (name, values) in &p.point_scalars {
            let _ = writeln!(out, "SCALARS {name} double 1\nLOOKUP_TABLE default");
            for v in values {
                let _ = writeln!(out, "{v}");
            }
        }
    }
    out
}

/// Writes `mesh` as a legacy ASCII `.vtk` POLYDATA file: `POINTS` (double), `POLYGONS`
/// (one triangle per cell, winding kept, so normals keep pointing out of the mask), and,
/// when `scalars` is given, `POINT_DATA` with one `SCALARS <name> double 1` array.
///
/// Points are written in **LPS** millimetres and the title line says `SPACE=LPS`, as
/// [`write_polylines`] does: 3D Slicer (4.11 and later) writes its models in LPS with
/// that tag and reads untagged legacy models as LPS too, so the file opens in place over
/// the CT with no RAS flip (and no flip is needed on our side, where LPS is the world).
///
/// Refused with [`ErrorKind::InvalidInput`] naming `path`, before anything is written: a
/// non-finite vertex, a triangle index out of range, a scalar name that is empty or has
/// whitespace, a scalar array whose length differs from the vertex count, or a
/// non-finite scalar. Written atomically (temporary file, then rename).
pub fn write_surface(
    path: &Path,
    mesh: &TriangleMesh,
    scalars: Option<(&str, &[f64])>,
) -> Result<()> {
    validate_surface(mesh, scalars).map_err(|m| Error::new(path, ErrorKind::InvalidInput(m)))?;
    crate::atomic::write_atomic(path, render_surface(mesh, scalars).as_ref())
}

/// Checks vertices, triangle indices and the scalar array.
fn validate_surface(mesh: &TriangleMesh, scalars: Option<(&str, &[f64])>) -> Result<(), String> {
    let n = mesh.vertices_lps.len();
    if let Some(i) = mesh
        .vertices_lps
        .iter()
        .position(|x| x.iter().any(|v| !v.is_finite()))
    {
        return Err(format!(
            "vertex {i} is not finite: {:?}",
            mesh.vertices_lps[i]
        ));
    }
    for (t, triangle) in mesh.triangles.iter().enumerate() {
        if let Some(&bad) = triangle.iter().find(|&&i| i as usize >= n) {
            return Err(format!(
                "triangle {t} refers to vertex {bad} but there are {n} vertices"
            ));
        }
    }
    if let Some((name, values)) = scalars {
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(format!(
                "scalar array name '{name}' is empty or has whitespace"
            ));
        }
        if values.len() != n {
            return Err(format!(
                "scalar array '{name}' has {} values for {n} vertices",
                values.len()
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "scalar array '{name}' has a non-finite value at vertex {i}: {}",
                values[i]
            ));
        }
    }
    Ok(())
}

/// The surface file's text (same header and number format as [`render`]).
fn render_surface(mesh: &TriangleMesh, scalars: Option<(&str, &[f64])>) -> String {
    let mut out = String::new();
    out.push_str("# vtk DataFile Version 4.2\n");
    out.push_str("Pinhole output. SPACE=LPS\n");
    out.push_str("ASCII\nDATASET POLYDATA\n");
    // Writing into a String cannot fail.
    let _ = writeln!(out, "POINTS {} double", mesh.vertices_lps.len());
    for [x, y, z] in &mesh.vertices_lps {
        let _ = writeln!(out, "{x} {y} {z}");
    }
    if !mesh.triangles.is_empty() {
        let count = mesh.triangles.len();
        let _ = writeln!(out, "POLYGONS {count} {}", 4 * count);
        for [a, b, c] in &mesh.triangles {
            let _ = writeln!(out, "3 {a} {b} {c}");
        }
    }
    if let Some((name, values)) = scalars {
        let _ = writeln!(out, "POINT_DATA {}", mesh.vertices_lps.len());
        let _ = writeln!(out, "SCALARS {name} double 1\nLOOKUP_TABLE default");
        for v in values {
            let _ = writeln!(out, "{v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_lines_with_point_counts() {
        let p = PolyLines {
            points_lps: vec![[0.0, 1.0, 2.5], [1.0, 1.0, 2.5], [2.0, 1.5, 2.5]],
            lines: vec![vec![0, 1, 2], vec![2, 0]],
            point_scalars: vec![("radius".into(), vec![1.0, 0.5, 0.25])],
        };
        let text = render(&p);
        assert!(text.starts_with("# vtk DataFile Version 4.2\n"));
        assert!(text.contains("LINES 2 7\n3 0 1 2\n2 2 0\n"));
        assert!(text.contains(
            "POINT_DATA 3\nSCALARS radius double 1\nLOOKUP_TABLE default\n1\n0.5\n0.25\n"
        ));
    }

    #[test]
    fn rejects_bad_indices_and_lengths() {
        let mut p = PolyLines {
            points_lps: vec![[0.0; 3]; 2],
            lines: vec![vec![0, 2]],
            point_scalars: vec![],
        };
        assert!(validate(&p).is_err());
        p.lines = vec![vec![0, 1]];
        assert!(validate(&p).is_ok());
        p.point_scalars = vec![("radius".into(), vec![1.0])];
        assert!(validate(&p).is_err());
        p.point_scalars = vec![("bad name".into(), vec![1.0, 2.0])];
        assert!(validate(&p).is_err());
    }
}
