//! How reports name their input files. A folder named after the patient
//! (`/data/DOE_JOHN_1957/ct.nii.gz`) must not end up in `plan.json` or `/api/session`,
//! so reports record the file's own name (with its SHA-256 where the report has one)
//! and the full path only when the user asks (`pinhole --record-full-paths`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

static FULL_PATHS: AtomicBool = AtomicBool::new(false);

/// Reports of this process record full input paths (`true`) or file names (`false`,
/// the default).
pub fn record_full_paths(full: bool) {
    FULL_PATHS.store(full, Ordering::Relaxed);
}

/// `path` as a report records it: its last component (a file or a DICOM folder's name),
/// or the whole path when [`record_full_paths`] is on.
pub fn recorded_path(path: &Path) -> String {
    if FULL_PATHS.load(Ordering::Relaxed) {
        return path.display().to_string();
    }
    match path.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_file_name_and_drops_the_folders() {
        let path = Path::new("/data/DOE_JOHN_1957/ct.nii.gz");
        assert_eq!(recorded_path(path), "ct.nii.gz");
        assert_eq!(
            recorded_path(Path::new("/data/DOE_JOHN_1957/")),
            "DOE_JOHN_1957"
        );
    }
}
