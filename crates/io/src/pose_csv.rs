//! Timed needle poses as CSV (RAS mm, one pose per row), as `pinhole replay` reads and
//! writes them.
//!
//! Reading: `#` comments, blank lines and one non-numeric header line (the first line
//! with content, before any pose) are skipped; fields are separated by commas.
//! - 17 columns: `t, m00, m01, … m33` (4×4 row-major `NeedleTipToReference`);
//! - 8 columns: `t, x, y, z, qx, qy, qz, qw` (tip position and a quaternion, normalised).
//!
//! `t` is in seconds. Writing ([`to_text`], [`write`]) gives the 17-column form under a
//! `# Not for clinical use.` comment and the `t,m00,…,m33` header, values in Rust's
//! shortest round-trip notation, so that reading it back gives the same poses.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result, WithPath};
use pinhole_volume::math::{rigid_from_quaternion, Mat4, IDENTITY4};

/// The comment and header line [`to_text`] starts with.
pub const HEADER: &str = "# Not for clinical use. NeedleTipToReference poses, RAS mm\nt,m00,m01,m02,m03,m10,m11,m12,m13,m20,m21,m22,m23,m30,m31,m32,m33\n";

/// One recorded pose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedPose {
    pub t_s: f64,
    /// `NeedleTipToReference`, RAS, row-major.
    pub matrix: Mat4,
}

/// Why a line of pose CSV could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub what: String,
}

/// Reads a pose CSV (see the module documentation).
pub fn read(path: &Path) -> Result<Vec<TimedPose>> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    parse(&text)
        .map_err(|LineError { line, what }| Error::new(path, ErrorKind::InvalidLine { line, what }))
}

/// Parses pose CSV text; the error names the 1-based line.
pub fn parse(text: &str) -> std::result::Result<Vec<TimedPose>, LineError> {
    let mut poses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let numbers: Option<Vec<f64>> = fields.iter().map(|f| f.parse().ok()).collect();
        let Some(v) = numbers else {
            if poses.is_empty() && n == first_content_line(text) {
                continue; // header
            }
            return Err(line_error(n, format!("not numeric: {line:?}")));
        };
        poses.push(pose_from_row(&v).map_err(|what| line_error(n, what))?);
    }
    Ok(poses)
}

/// The text of `poses` in the 17-column form (see the module documentation).
pub fn to_text(poses: &[TimedPose]) -> String {
    let mut text = String::from(HEADER);
    for p in poses {
        let cells: Vec<String> = std::iter::once(p.t_s)
            .chain(p.matrix.iter().flatten().copied())
            .map(|v| format!("{v}"))
            .collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    text
}

/// Writes `poses` as [`to_text`] does.
pub fn write(path: &Path, poses: &[TimedPose]) -> Result<()> {
    crate::atomic::write_atomic(path, to_text(poses).as_ref())
}

/// `n` is the 0-based line index.
fn line_error(n: usize, what: String) -> LineError {
    LineError { line: n + 1, what }
}

/// One row of numbers: finite, 17 or 8 columns.
fn pose_from_row(v: &[f64]) -> std::result::Result<TimedPose, String> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err("non-finite value".into());
    }
    let matrix = match v.len() {
        17 => {
            let mut m = IDENTITY4;
            for (i, x) in v[1..].iter().enumerate() {
                m[i / 4][i % 4] = *x;
            }
            m
        }
        8 => rigid_from_quaternion([v[1], v[2], v[3]], [v[4], v[5], v[6], v[7]])
            .ok_or("zero quaternion".to_owned())?,
        k => {
            return Err(format!(
                "{k} columns: expected 17 (t + 4x4) or 8 (t, x, y, z, qx, qy, qz, qw)"
            ))
        }
    };
    Ok(TimedPose { t_s: v[0], matrix })
}

/// The 0-based index of the first line with content (outside comments).
fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| !l.split('#').next().unwrap_or("").trim().is_empty())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_only_in_the_first_content_line() {
        let text = "# c\n\nt,x\n0,1,0,0,0,0,0,1\n";
        assert_eq!(parse(text).unwrap().len(), 1);
        let late = "0,1,0,0,0,0,0,1\nt,x\n";
        assert_eq!(
            parse(late).unwrap_err(),
            LineError {
                line: 2,
                what: "not numeric: \"t,x\"".into()
            }
        );
    }

    #[test]
    fn zero_and_non_finite_rows_name_their_line() {
        let e = parse("0,1,2,3,0,0,0,0\n").unwrap_err();
        assert_eq!((e.line, e.what.as_str()), (1, "zero quaternion"));
        let e = parse("# c\n0,1,2,3,0,0,0,inf\n").unwrap_err();
        assert_eq!((e.line, e.what.as_str()), (2, "non-finite value"));
    }
}
