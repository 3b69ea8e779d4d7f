//! Helpers shared by the integration tests: the golden OpenIGTLink messages from
//! `../shared/data/openigtlink` and the pyigtl reference script in `tests/py`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The golden-vector folder (`$PINHOLE_DATA/openigtlink` or `../shared/data/openigtlink`).
pub fn golden_dir() -> PathBuf {
    let base = std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"));
    let dir = base.join("openigtlink");
    assert!(dir.is_dir(), "missing real test data {}", dir.display());
    dir
}

/// Every golden `.bin` file, sorted by name, with its bytes.
pub fn golden_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    // The upstream set: 14 header v1, 6 header v2 and 3 header + body pairs.
    assert_eq!(files.len(), 23, "golden files: {:?}", names(&files));
    files
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}

/// One golden file's bytes.
pub fn golden(name: &str) -> Vec<u8> {
    std::fs::read(golden_dir().join(name)).unwrap()
}

/// Big-endian readers at fixed offsets, independent of the decoder.
pub fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
pub fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
pub fn be_f32(b: &[u8], at: usize) -> f32 {
    f32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Runs `tests/py/<script>` with `python3` (or `$PINHOLE_PYTHON`) and returns stdout.
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

pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}
