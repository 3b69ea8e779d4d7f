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
    std::fs::write(path, to_json(value)?).map_err(|e| Error::write(path, e))
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
