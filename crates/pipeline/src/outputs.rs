//! Outputs never replace inputs: a command's output paths are checked against its input
//! files before anything is computed (`drr --out-raw ct.nii.gz` once replaced the CT).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Refuses when any of `outputs` is the same file as any of `inputs` (same path after
/// symbolic links, or the same inode through a hard link). Outputs that do not exist
/// yet cannot be inputs.
pub fn refuse_overwriting_inputs(inputs: &[&Path], outputs: &[PathBuf]) -> Result<()> {
    for output in outputs {
        let Ok(output_meta) = std::fs::metadata(output) else {
            continue;
        };
        for input in inputs {
            let Ok(input_meta) = std::fs::metadata(input) else {
                continue;
            };
            if same_file(input, &input_meta, output, &output_meta) {
                return Err(Error::invalid(format!(
                    "refusing to write {}: it is the input {}; choose another output",
                    output.display(),
                    input.display()
                )));
            }
        }
    }
    Ok(())
}

/// The files a result folder holds, as paths.
pub fn files_in(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|name| dir.join(name)).collect()
}

#[cfg(unix)]
fn same_file(_: &Path, a: &std::fs::Metadata, _: &Path, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Path, _: &std::fs::Metadata, b: &Path, _: &std::fs::Metadata) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_input_under_another_spelling_and_through_a_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let ct = dir.path().join("ct.nii.gz");
        std::fs::write(&ct, b"ct").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let spelt = dir.path().join("sub/../ct.nii.gz");
        assert!(refuse_overwriting_inputs(&[&ct], std::slice::from_ref(&spelt)).is_err());
        let linked = dir.path().join("linked.nii.gz");
        std::fs::hard_link(&ct, &linked).unwrap();
        let err = refuse_overwriting_inputs(&[&ct], &[linked]).unwrap_err();
        assert!(err.to_string().contains("it is the input"), "{err}");
        let fresh = dir.path().join("drr.nii.gz");
        assert!(refuse_overwriting_inputs(&[&ct], &[fresh]).is_ok());
        std::fs::write(dir.path().join("other.png"), b"x").unwrap();
        assert!(refuse_overwriting_inputs(&[&ct], &[dir.path().join("other.png")]).is_ok());
    }
}
