//! What every report shares: the disclaimer, the version, JSON writing (keys sorted, so
//! a file's bytes depend only on its content) and typed reading back.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The disclaimer every report and output carries.
pub const DISCLAIMER: &str = "Pinhole is research software: NOT FOR CLINICAL USE.";

/// Pinhole's version, as reports record it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A report type: its file name, schema name and format version.
pub trait Report: Serialize + DeserializeOwned {
    /// The schema's name (`docs/schemas/<NAME>.schema.json`).
    const NAME: &'static str;
    /// The format version this build writes (`schema_version`).
    const SCHEMA_VERSION: u32;
    /// The `schema_version` read from a file.
    fn schema_version(&self) -> u32;

    /// Reads a report written by Pinhole (this or an older format version).
    fn read(path: &Path) -> Result<Self> {
        let report: Self = read_json(path, Self::NAME)?;
        check_version(
            path,
            Self::NAME,
            report.schema_version(),
            Self::SCHEMA_VERSION,
        )?;
        Ok(report)
    }
}

/// Implements [`Report`] for a type with a `schema_version: u32` field:
/// `versioned_report!(Type, "schema-name", version)`. Bump the version (and say why in
/// a comment and CHANGELOG.md) when a change would break a reader of the old format.
macro_rules! versioned_report {
    ($report:ty, $name:literal, $version:literal) => {
        impl $crate::report::Report for $report {
            const NAME: &'static str = $name;
            const SCHEMA_VERSION: u32 = $version;
            fn schema_version(&self) -> u32 {
                self.schema_version
            }
        }
    };
}
pub(crate) use versioned_report;

/// A JSON file as `T`; the error names the file and what it should have been.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Report {
        path: path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Report {
        path: path.display().to_string(),
        reason: format!("not a Pinhole {what} report: {e}"),
    })
}

/// Refuses a file written in a newer format version than this build's.
pub(crate) fn check_version(path: &Path, name: &str, found: u32, current: u32) -> Result<()> {
    if found > current {
        return Err(Error::Report {
            path: path.display().to_string(),
            reason: format!(
                "written in {name} format version {found}, newer than this Pinhole's ({current})"
            ),
        });
    }
    Ok(())
}

/// `value` as pretty JSON with object keys sorted.
pub fn to_json(value: &impl Serialize) -> Result<String> {
    let tree = serde_json::to_value(value)
        .map_err(|e| Error::invalid(format!("report not serialisable: {e}")))?;
    serde_json::to_string_pretty(&tree)
        .map_err(|e| Error::invalid(format!("report not serialisable: {e}")))
}

/// Writes `value` as pretty JSON with sorted keys.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    pinhole_io::atomic::write_atomic(path, to_json(value)?.as_bytes()).map_err(Error::from)
}

/// The file a failed run leaves in its output folder (removed by the next complete run).
pub const FAILED_MARKER: &str = "pinhole-failed.txt";

/// Writes a result folder so that its report means "complete": creates the folder,
/// removes the previous report (a run that stops midway leaves no report beside a mix of
/// files), writes the other files with `write_files` (each atomically), then the report
/// last, then removes a [`FAILED_MARKER`] of an earlier run.
pub fn write_folder(
    dir: &Path,
    report_name: &str,
    report: &impl Serialize,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    write_folder_then_report(dir, report_name, |dir| {
        write_files(dir)?;
        Ok(report)
    })
    .map(|_| ())
}

/// [`write_folder`] for a report that depends on what the files were (UIDs of a written
/// DICOM object): `write_files` writes them and returns the report, written last.
pub fn write_folder_then_report<R: Serialize>(
    dir: &Path,
    report_name: &str,
    write_files: impl FnOnce(&Path) -> Result<R>,
) -> Result<R> {
    create_dir(dir)?;
    let report_path = dir.join(report_name);
    remove_if_present(&report_path)?;
    let report = write_files(dir)?;
    write_json(&report_path, &report)?;
    remove_if_present(&dir.join(FAILED_MARKER))?;
    Ok(report)
}

/// Leaves [`FAILED_MARKER`] in `dir` (when the folder exists) saying that `command`
/// failed with `error` and that any other file there is from an earlier run. Returns the
/// marker's path when written.
pub fn mark_failed(dir: &Path, command: &str, error: &str) -> Option<std::path::PathBuf> {
    if !dir.is_dir() {
        return None;
    }
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = format!(
        "pinhole {command} failed (unix time {seconds} s): {error}\n\
         Any other file in this folder is from an earlier run, not from this one.\n\
         {DISCLAIMER}\n"
    );
    let marker = dir.join(FAILED_MARKER);
    pinhole_io::atomic::write_atomic(&marker, text.as_bytes())
        .ok()
        .map(|()| marker)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::write(path, e)),
        _ => Ok(()),
    }
}

/// Creates an output folder (and its parents).
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Write {
        path: dir.display().to_string(),
        source: e,
    })
}

/// The default `schema_version` of files written before reports were versioned.
pub(crate) fn unversioned() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_shows_its_report_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plan");
        write_folder(&out, "plan.json", &serde_json::json!({"run": 1}), |out| {
            std::fs::write(out.join("best.png"), b"1").map_err(|e| Error::write(out, e))
        })
        .unwrap();
        // A second run that fails while writing its files leaves no report beside them.
        let failed = write_folder(&out, "plan.json", &serde_json::json!({"run": 2}), |_| {
            Err(Error::invalid("disk full"))
        });
        assert!(failed.is_err());
        assert!(!out.join("plan.json").exists());
        let marker = mark_failed(&out, "plan needle", "disk full").unwrap();
        assert!(std::fs::read_to_string(&marker)
            .unwrap()
            .contains("disk full"));
        // A complete run writes its report and clears the marker.
        write_folder(
            &out,
            "plan.json",
            &serde_json::json!({"run": 3}),
            |_| Ok(()),
        )
        .unwrap();
        assert!(std::fs::read_to_string(out.join("plan.json"))
            .unwrap()
            .contains('3'));
        assert!(!marker.exists());
        assert!(mark_failed(&dir.path().join("absent"), "x", "y").is_none());
    }
}
