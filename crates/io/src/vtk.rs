//! Legacy VTK polydata writer (ASCII, file version 4.2) for polylines such as vessel
//! centrelines, tagged `SPACE=LPS` the way 3D Slicer writes and reads it.

use std::fmt::Write as _;
use std::path::Path;

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
