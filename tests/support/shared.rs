//! Helpers shared by every crate's integration tests (included with `#[path]`): real data
//! from `../shared/data` and the Python reference scripts in `tests/py` (nibabel, pydicom,
//! scipy, slicerio, pyigtl). It may use only `std` and `serde_json`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file under the shared real-data folder (`$PINHOLE_DATA` or `../shared/data`).
pub fn shared_data(relative: &str) -> PathBuf {
    let base = std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"));
    let path = base.join(relative);
    assert!(path.exists(), "missing real test data {}", path.display());
    path
}

/// Runs `tests/py/<script>` with `python3` (or `$PINHOLE_PYTHON`) and returns stdout.
/// Fails the test with the script's stderr when it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let interpreter = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script_path = repo_root().join("tests/py").join(script);
    let out = Command::new(&interpreter)
        .arg(&script_path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    assert!(
        out.status.success(),
        "{} {:?} failed (install tests/py/requirements.txt):\n{}",
        script_path.display(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python output is UTF-8")
}

/// Parses the JSON a reference script printed.
pub fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let text = python(script, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON from {script}: {e}\n{text}"))
}

/// Reads a raw little-endian f32 array written by a reference script.
pub fn read_f32_le(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Reads a raw little-endian f64 array written by a reference script.
pub fn read_f64_le(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A 4×4 matrix printed as JSON (nested arrays, row-major).
pub fn json_matrix(value: &serde_json::Value) -> [[f64; 4]; 4] {
    let mut m = [[f64::NAN; 4]; 4];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            *x = value[r][c]
                .as_f64()
                .unwrap_or_else(|| panic!("not a 4x4 matrix: {value}"));
        }
    }
    m
}

/// `chest-ct/structures.csv` parsed with plain string splitting: `(id, structure)` rows.
/// Its ids 1..=116 equal TotalSegmentator v2's; 117/118 differ (see `labels.rs`).
pub fn structures_csv() -> Vec<(u32, String)> {
    let text = std::fs::read_to_string(shared_data("chest-ct/structures.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().trim().split(',').collect();
    let id_col = header.iter().position(|h| *h == "id").unwrap();
    let name_col = header.iter().position(|h| *h == "structure").unwrap();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.trim().split(',').collect();
            (fields[id_col].parse().unwrap(), fields[name_col].to_owned())
        })
        .collect()
}

/// Asserts two 4×4 matrices agree within `tol`.
pub fn assert_matrix_close(ours: &[[f64; 4]; 4], reference: &serde_json::Value, tol: f64) {
    for r in 0..4 {
        for c in 0..4 {
            let expected = reference[r][c].as_f64().unwrap();
            assert!(
                (ours[r][c] - expected).abs() <= tol,
                "matrix[{r}][{c}]: ours {} reference {expected}\nours {ours:?}\nreference {reference}",
                ours[r][c]
            );
        }
    }
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in KiB.
pub fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Runs the test `name` (its full path in this test binary) alone in a child process
/// with the environment variable `child_env` set, so that what it measures of the
/// process (peak memory) is its own; fails unless the child's test passed.
pub fn passes_in_child(name: &str, child_env: &str) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(child_env, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("1 passed"), "child run did not pass:\n{text}");
}

/// Rotation matrix about the unit `axis` by `deg` degrees (Rodrigues), row-major.
pub fn rotation(axis: [f64; 3], deg: f64) -> [[f64; 3]; 3] {
    let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
    let [x, y, z] = axis.map(|a| a / n);
    let (s, c) = deg.to_radians().sin_cos();
    let t = 1.0 - c;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

/// Reads the voxels a reference script saved with `tests/py/voxel_file.py`: a `.npy`
/// file (one-dimensional, little-endian integer or float of 1–8 bytes) or, for any other
/// name, raw little-endian f64. Values come back as f64, in the file's order.
pub fn read_voxels(path: &Path) -> Vec<f64> {
    if path.extension().and_then(|e| e.to_str()) != Some("npy") {
        return read_f64_le(path);
    }
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[header_start..header_start + header_len]).unwrap();
    assert!(
        header.contains("'fortran_order': False"),
        "{}: {header}",
        path.display()
    );
    let descr = header
        .split("'descr': '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("{}: no descr in {header}", path.display()));
    let data = &bytes[header_start + header_len..];
    fn each<const N: usize>(data: &[u8], convert: fn([u8; N]) -> f64) -> Vec<f64> {
        data.chunks_exact(N)
            .map(|c| convert(c.try_into().unwrap()))
            .collect()
    }
    match descr {
        "|u1" => data.iter().map(|&b| f64::from(b)).collect(),
        "|i1" => data.iter().map(|&b| f64::from(b as i8)).collect(),
        "<u2" => each::<2>(data, |b| f64::from(u16::from_le_bytes(b))),
        "<i2" => each::<2>(data, |b| f64::from(i16::from_le_bytes(b))),
        "<u4" => each::<4>(data, |b| f64::from(u32::from_le_bytes(b))),
        "<i4" => each::<4>(data, |b| f64::from(i32::from_le_bytes(b))),
        "<f4" => each::<4>(data, |b| f64::from(f32::from_le_bytes(b))),
        "<f8" => each::<8>(data, f64::from_le_bytes),
        other => panic!("{}: unexpected .npy dtype {other}", path.display()),
    }
}
