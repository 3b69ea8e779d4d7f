//! De-identified copies of DICOM files (DICOM PS3.15 Basic Application Level
//! Confidentiality Profile, `pinhole_io::dicom::deidentify`) under
//! `<out>/<study>/<series>/<instance>.dcm`, and `dicom_deidentify.json`
//! ([`DeidentifyReport`]): counts of what was removed, emptied and replaced, never a
//! patient's name, ID or an original UID. Not for clinical use.

use std::path::{Path, PathBuf};

use pinhole_io::dicom::deidentify::{deidentify_file, DeidentifyKey, METHOD};
use pinhole_io::dicom::derived::check_uid;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::observe::Observer;
use crate::report::{
    unversioned, versioned_report, write_folder_then_report, Report, DISCLAIMER, VERSION,
};

/// The report's file name in the output folder.
pub const REPORT_FILE: &str = "dicom_deidentify.json";

/// Where the UID key comes from (its `Debug` never shows the secret).
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A secret given by the user (a key file, or `PINHOLE_DEIDENTIFY_KEY`): the same
    /// UIDs in every run with that secret.
    Secret { secret: String, origin: String },
    /// A key for this run only.
    Random,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySource({})", self.describe())
    }
}

impl KeySource {
    pub fn key(&self) -> DeidentifyKey {
        match self {
            Self::Secret { secret, .. } => DeidentifyKey::from_secret(secret),
            Self::Random => DeidentifyKey::random(),
        }
    }

    /// What the report says about the key (never the key).
    pub fn describe(&self) -> String {
        match self {
            Self::Secret { origin, .. } => format!("given ({origin})"),
            Self::Random => "random, for this run only".to_owned(),
        }
    }
}

/// What to de-identify and where to put it.
#[derive(Debug, Clone)]
pub struct DeidentifyRequest {
    pub files: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub key: KeySource,
}

/// One de-identified file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeidentifiedOutput {
    /// Path under the output folder: `<study>/<series>/<instance>.dcm` (new UIDs).
    pub file: String,
    pub removed: usize,
    pub private_removed: usize,
    pub emptied: usize,
    pub dummies: usize,
    pub uids_replaced: usize,
}

/// An input that could not be de-identified.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FailedInput {
    /// The input's file name.
    pub input: String,
    pub error: String,
}

/// `dicom_deidentify.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeidentifyReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub version: String,
    /// The profile applied (De-identification Method written into every object).
    pub profile: String,
    /// Where the UID key came from: objects de-identified with the same given key keep
    /// their links (a Segmentation to its CT); a random key links only this run's.
    pub key: String,
    pub outputs: Vec<DeidentifiedOutput>,
    pub failed: Vec<FailedInput>,
    pub warnings: Vec<String>,
    pub disclaimer: String,
}
versioned_report!(DeidentifyReport, "dicom-deidentify", 1);

impl DeidentifyReport {
    /// The terminal's summary.
    pub fn to_text(&self) -> String {
        let sum = |f: fn(&DeidentifiedOutput) -> usize| self.outputs.iter().map(f).sum::<usize>();
        format!(
            "de-identified {} file(s) (PS3.15 basic profile; key {}): {} attributes removed, \
             {} private removed, {} emptied, {} dummy values, {} UIDs replaced{}\n",
            self.outputs.len(),
            self.key,
            sum(|o| o.removed),
            sum(|o| o.private_removed),
            sum(|o| o.emptied),
            sum(|o| o.dummies),
            sum(|o| o.uids_replaced),
            if self.failed.is_empty() {
                String::new()
            } else {
                format!("; {} file(s) failed", self.failed.len())
            }
        )
    }
}

/// De-identifies every file of `request` into `request.out_dir` and writes the report.
/// A file that cannot be read is listed in `failed`; the run fails only when none was
/// de-identified.
pub fn run(request: &DeidentifyRequest, observer: &dyn Observer) -> Result<DeidentifyReport> {
    if request.files.is_empty() {
        return Err(Error::invalid("no DICOM files to de-identify"));
    }
    let key = request.key.key();
    if matches!(request.key, KeySource::Random) {
        observer.info(
            "UIDs are replaced with a key for this run only: objects de-identified in another \
             run will not link to these (give a key file to keep them linked)",
        );
    }
    write_folder_then_report(&request.out_dir, REPORT_FILE, |dir| {
        let mut outputs = Vec::new();
        let mut failed = Vec::new();
        let mut warnings = Vec::new();
        observer.begin("de-identifying");
        for (n, path) in request.files.iter().enumerate() {
            observer.advance(n, request.files.len());
            match one_file(path, dir, &key) {
                Ok((output, file_warnings)) => {
                    for w in file_warnings {
                        let w = format!("{}: {w}", output.file);
                        observer.warn(&w);
                        warnings.push(w);
                    }
                    outputs.push(output);
                }
                Err(error) => failed.push(FailedInput {
                    input: crate::provenance::recorded_path(path),
                    error,
                }),
            }
        }
        observer.end();
        for f in &failed {
            let w = format!("{} not de-identified: {}", f.input, f.error);
            observer.warn(&w);
            warnings.push(w);
        }
        if outputs.is_empty() {
            return Err(Error::invalid(format!(
                "no file could be de-identified ({} failed; the first: {}: {})",
                failed.len(),
                failed.first().map_or("", |f| f.input.as_str()),
                failed.first().map_or("", |f| f.error.as_str())
            )));
        }
        Ok(DeidentifyReport {
            schema_version: DeidentifyReport::SCHEMA_VERSION,
            version: VERSION.into(),
            profile: METHOD.into(),
            key: request.key.describe(),
            outputs,
            failed,
            warnings,
            disclaimer: DISCLAIMER.into(),
        })
    })
}

/// De-identifies `path` into `<dir>/<study>/<series>/<instance>.dcm`.
fn one_file(
    path: &Path,
    dir: &Path,
    key: &DeidentifyKey,
) -> std::result::Result<(DeidentifiedOutput, Vec<String>), String> {
    let done = deidentify_file(path, key).map_err(|e| e.kind.to_string())?;
    // Checked as UIDs before they become folder and file names.
    let part = |uid: String, what: &str| {
        check_uid(what, &uid)
            .map(|()| uid)
            .map_err(|e| format!("no usable {what} after de-identification: {e}"))
    };
    let relative = PathBuf::from(part(done.study_uid(), "Study Instance UID")?)
        .join(part(done.series_uid(), "Series Instance UID")?)
        .join(format!(
            "{}.dcm",
            part(done.sop_instance_uid(), "SOP Instance UID")?
        ));
    let out = dir.join(&relative);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create a folder: {e}"))?;
    }
    done.write(&out).map_err(|e| e.kind.to_string())?;
    let s = &done.summary;
    Ok((
        DeidentifiedOutput {
            file: relative.to_string_lossy().replace('\\', "/"),
            removed: s.removed,
            private_removed: s.private_removed,
            emptied: s.emptied,
            dummies: s.dummies,
            uids_replaced: s.uids_replaced,
        },
        s.warnings.clone(),
    ))
}
