//! Writing a received instance: the path from its UIDs, the Part-10 file, atomically.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTable, FileMetaTableBuilder};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use crate::dataset::scan;
use crate::dimse::status;

/// Longest UID (PS3.5 §9.1).
pub const MAX_UID_CHARS: usize = 64;

/// Checks a UID that becomes a path component: 1–64 characters, digits and dots only,
/// no empty component (so never `.`, `..`, a leading or trailing dot, or a separator).
pub fn check_uid(what: &str, uid: &str) -> Result<(), String> {
    let ok = !uid.is_empty()
        && uid.len() <= MAX_UID_CHARS
        && uid
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} is not a UID (1-{MAX_UID_CHARS} digits and dots)",
            uid.chars().take(80).collect::<String>()
        ))
    }
}

/// A refused instance: the DIMSE status to answer with and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// A stored instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub folder: PathBuf,
    pub path: PathBuf,
    pub bytes: u64,
}

/// What is known of an instance before its data set is looked at.
pub struct Incoming<'a> {
    /// Affected SOP Class / Instance UID of the C-STORE-RQ.
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    /// The presentation context's transfer syntax.
    pub transfer_syntax: &'a str,
    pub calling_ae: &'a str,
    pub called_ae: &'a str,
}

/// Checks the data set and writes `store_dir/<study>/<series>/<sop instance>.dcm`
/// atomically: a temporary file beside it (hidden, `pinhole_io::atomic::TEMP_MARKER`
/// in its name), written in full and synced, then renamed over the final name (a
/// duplicate instance replaces the old file in one step). On any failure nothing is
/// left under the final name and the temporary file is removed.
///
/// The file is the Part-10 preamble, `DICM`, a file meta group built from the
/// command's SOP class and instance UIDs and the negotiated transfer syntax, then the
/// data set bytes exactly as received.
pub fn store_instance(
    store_dir: &Path,
    incoming: &Incoming,
    data: &[u8],
) -> Result<Stored, Refusal> {
    let cannot = |m: String| Refusal::new(status::CANNOT_UNDERSTAND, m);
    check_uid("Affected SOP Instance UID", incoming.sop_instance_uid).map_err(cannot)?;
    check_uid("Affected SOP Class UID", incoming.sop_class_uid).map_err(cannot)?;
    let ts = TransferSyntaxRegistry
        .get(incoming.transfer_syntax)
        .ok_or_else(|| {
            cannot(format!(
                "unknown transfer syntax {}",
                incoming.transfer_syntax
            ))
        })?;
    let scanned = scan(
        data,
        ts,
        &[
            tags::SOP_CLASS_UID,
            tags::SOP_INSTANCE_UID,
            tags::STUDY_INSTANCE_UID,
            tags::SERIES_INSTANCE_UID,
        ],
    )
    .map_err(cannot)?;
    let required = |tag, what: &str| {
        let uid = scanned
            .text(tag)
            .ok_or_else(|| cannot(format!("the data set has no {what} (type 1)")))?;
        check_uid(what, &uid).map_err(cannot)?;
        Ok::<_, Refusal>(uid)
    };
    let study_uid = required(tags::STUDY_INSTANCE_UID, "Study Instance UID")?;
    let series_uid = required(tags::SERIES_INSTANCE_UID, "Series Instance UID")?;
    // The file meta group carries the command's SOP Instance UID; one in the data set
    // (blank in some de-identified data) must agree with it.
    if let Some(instance_in_data) = scanned.text(tags::SOP_INSTANCE_UID) {
        if instance_in_data != incoming.sop_instance_uid {
            return Err(cannot(format!(
                "the data set's SOP Instance UID {} differs from the command's {}",
                instance_in_data.chars().take(80).collect::<String>(),
                incoming.sop_instance_uid
            )));
        }
    }
    if let Some(class_in_data) = scanned.text(tags::SOP_CLASS_UID) {
        if class_in_data != incoming.sop_class_uid {
            return Err(Refusal::new(
                status::DATA_SET_MISMATCH,
                format!(
                    "the data set's SOP Class UID {class_in_data} differs from the command's {}",
                    incoming.sop_class_uid
                ),
            ));
        }
    }
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(incoming.sop_class_uid)
        .media_storage_sop_instance_uid(incoming.sop_instance_uid)
        .transfer_syntax(incoming.transfer_syntax)
        .sending_application_entity_title(incoming.calling_ae)
        .receiving_application_entity_title(incoming.called_ae)
        .source_application_entity_title(incoming.called_ae)
        .build()
        .map_err(|e| cannot(format!("cannot build the file meta group: {e}")))?;
    let folder = store_dir.join(&study_uid).join(&series_uid);
    let out_of_resources = |m: String| Refusal::new(status::OUT_OF_RESOURCES, m);
    std::fs::create_dir_all(&folder)
        .map_err(|e| out_of_resources(format!("cannot create {}: {e}", folder.display())))?;
    let path = folder.join(format!("{}.dcm", incoming.sop_instance_uid));
    let bytes = write_part10_atomic(&path, &meta, data)
        .map_err(|e| out_of_resources(format!("cannot write {}: {e}", path.display())))?;
    Ok(Stored {
        study_uid,
        series_uid,
        sop_class_uid: incoming.sop_class_uid.to_string(),
        sop_instance_uid: incoming.sop_instance_uid.to_string(),
        folder,
        path,
        bytes,
    })
}

/// Writes preamble + `DICM` + `meta` + `data` to a temporary file beside `path`,
/// syncs it, renames it to `path` and syncs the folder (best effort). Returns the
/// file's size.
fn write_part10_atomic(path: &Path, meta: &FileMetaTable, data: &[u8]) -> std::io::Result<u64> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?
        .to_string_lossy();
    let temporary = path.with_file_name(format!(
        ".{name}{}{}.{}",
        pinhole_io::atomic::TEMP_MARKER,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        let mut writer = BufWriter::new(file);
        writer.write_all(&[0u8; 128])?;
        writer.write_all(b"DICM")?;
        meta.write(&mut writer).map_err(std::io::Error::other)?;
        writer.write_all(data)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        drop(file);
        std::fs::rename(&temporary, path)?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    } else if let Some(folder) = path.parent() {
        let _ = File::open(folder).and_then(|f| f.sync_all());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_in_paths_are_digits_and_dots() {
        for good in ["1", "1.2.840.10008.5.1.4.1.1.2", &"1".repeat(64)] {
            check_uid("uid", good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "../../evil",
            "1..2",
            ".1",
            "1.",
            "1/2",
            "1\\2",
            "1.2 ",
            "a.b",
            &"1".repeat(65),
            "1.2\u{0}",
        ] {
            assert!(check_uid("uid", bad).is_err(), "{bad:?}");
        }
    }
}
