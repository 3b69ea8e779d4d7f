//! De-identification of a data set by the DICOM PS3.15 Basic Application Level
//! Confidentiality Profile (Annex E, Table E.1-1, without options). NOT FOR CLINICAL USE.
//!
//! * Every attribute of the table is treated by its action, in the data set and in every
//!   sequence item below it: **D** a dummy value of its VR, **Z** an empty value, **X**
//!   removed, **U** every UID replaced. Combined codes take the action that keeps the
//!   object valid for any IOD (the table leaves the choice to the attribute's type):
//!   Z/D, X/D, X/Z/D → D; X/Z → Z; X/Z/U* → the sequence kept with its UIDs replaced.
//! * Sequences whose action is D or U, and sequences the table does not name, are kept
//!   and de-identified item by item (a dummy sequence would lose what the object is for,
//!   e.g. a Measurement Report's content; identity inside it is treated all the same).
//! * Private attributes (odd groups) are removed; attributes the table does not name are
//!   kept, as the profile allows.
//! * UIDs become `2.25.<n>` with `n` 128 bits of SHA-256 over a key and the original UID
//!   (UUID version 8): the same key maps a UID to the same new one, so a series and the
//!   Segmentation referencing it stay linked when de-identified with one key; without
//!   the key the originals cannot be recovered by trying known UIDs. DICOM's own UIDs
//!   (`1.2.840.10008.…`, e.g. a well-known Frame of Reference) are kept.
//! * Patient Identity Removed (0012,0062) YES, De-identification Method (0012,0063) and its
//!   code sequence (0012,0064: DCM 113100 "Basic Application Confidentiality Profile") are
//!   added. Pixel data are not examined: BurnedInAnnotation YES is reported as a warning.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result, WithPath};

/// The standard's table, one attribute per line (see the file's header).
const TABLE: &str = include_str!("basic_profile.tsv");

/// Value of De-identification Method (0012,0063).
pub const METHOD: &str = "DICOM PS3.15 Basic Application Level Confidentiality Profile (Pinhole)";

/// Text written for D (dummy) on the text VRs (fits SH, CS and AE: 16 characters).
pub const DUMMY_TEXT: &str = "DEIDENTIFIED";

/// What the profile does to one attribute, combined codes resolved (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Dummy,
    Zero,
    Remove,
    Uid,
}

impl Action {
    /// Parses a table code: `D`, `Z`, `X`, `U`, or a combined one.
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "D" | "Z/D" | "X/D" | "X/Z/D" => Self::Dummy,
            "Z" | "X/Z" => Self::Zero,
            "X" => Self::Remove,
            "U" | "X/Z/U*" => Self::Uid,
            _ => return None,
        })
    }
}

/// The table: exact tags, and the masked repeating groups (curves, overlays).
struct Table {
    exact: HashMap<Tag, Action>,
    /// (group, element, group mask, element mask, action).
    masked: Vec<(u16, u16, u16, u16, Action)>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| parse_table(TABLE))
}

fn parse_table(text: &str) -> Table {
    let mut exact = HashMap::new();
    let mut masked = Vec::new();
    let hex = |s: &str| u16::from_str_radix(s.trim(), 16).ok();
    let pair = |s: &str| {
        let (g, e) = s.split_once(',')?;
        Some((hex(g)?, hex(e)?))
    };
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut fields = line.split('\t');
        let (Some(tag), Some(code)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(action) = Action::parse(code) else {
            continue;
        };
        match tag.split_once('&') {
            None => {
                if let Some((g, e)) = pair(tag) {
                    exact.insert(Tag(g, e), action);
                }
            }
            Some((value, mask)) => {
                if let (Some((g, e)), Some((gm, em))) = (pair(value), pair(mask)) {
                    masked.push((g, e, gm, em, action));
                }
            }
        }
    }
    Table { exact, masked }
}

/// The profile's action for `tag`, `None` where the table does not name it.
pub fn action_for(tag: Tag) -> Option<Action> {
    let t = table();
    t.exact.get(&tag).copied().or_else(|| {
        t.masked
            .iter()
            .find(|(g, e, gm, em, _)| tag.0 & gm == *g && tag.1 & em == *e)
            .map(|m| m.4)
    })
}

/// How many attributes the table names (the tests check it was read whole).
pub fn table_len() -> usize {
    let t = table();
    t.exact.len() + t.masked.len()
}

/// The secret that makes replaced UIDs consistent across objects and irreversible.
#[derive(Clone, PartialEq, Eq)]
pub struct DeidentifyKey([u8; 32]);

impl std::fmt::Debug for DeidentifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeidentifyKey(..)")
    }
}

impl DeidentifyKey {
    /// A key from a passphrase (the same text, the same UIDs).
    pub fn from_secret(secret: &str) -> Self {
        Self(
            Sha256::new()
                .chain_update(b"pinhole-deidentify key\0")
                .chain_update(secret.as_bytes())
                .finalize()
                .into(),
        )
    }

    /// A key for this process only: UIDs are consistent within one run, and nobody can
    /// map them back or reproduce them later.
    pub fn random() -> Self {
        Self::from_secret(&super::derived::random_uid())
    }

    /// The replacement of `uid` (DICOM's own `1.2.840.10008.` UIDs are kept).
    pub fn map_uid(&self, uid: &str) -> String {
        let uid = uid.trim_end_matches(['\0', ' ']);
        if uid.is_empty() || uid.starts_with("1.2.840.10008.") {
            return uid.to_owned();
        }
        let digest = Sha256::new()
            .chain_update(self.0)
            .chain_update([0u8])
            .chain_update(uid.as_bytes())
            .finalize();
        super::derived::uid_from_hash(&digest)
    }
}

/// What [`deidentify`] did, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Deidentified {
    /// Attributes removed (X), private ones excluded.
    pub removed: usize,
    /// Private attributes removed.
    pub private_removed: usize,
    /// Attributes emptied (Z).
    pub emptied: usize,
    /// Attributes given a dummy value (D).
    pub dummies: usize,
    /// UID values replaced (U, and D on a UID; DICOM's own UIDs are kept and not counted).
    pub uids_replaced: usize,
    /// What the profile could not do here (burned-in annotation in the pixels).
    pub warnings: Vec<String>,
}

/// Applies the basic profile to `obj` (module docs) and records that it did.
pub fn deidentify(obj: &mut InMemDicomObject, key: &DeidentifyKey) -> Deidentified {
    let mut done = Deidentified::default();
    apply(obj, key, &mut done);
    let burned_in = obj
        .element(tags::BURNED_IN_ANNOTATION)
        .ok()
        .and_then(|e| e.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("YES"));
    if burned_in {
        done.warnings.push(
            "BurnedInAnnotation is YES: text burned into the pixels is not examined or removed"
                .to_owned(),
        );
    }
    obj.put(DataElement::new(
        tags::PATIENT_IDENTITY_REMOVED,
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    obj.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD,
        VR::LO,
        PrimitiveValue::from(METHOD),
    ));
    let code = InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("113100")),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from("DCM"),
        ),
        DataElement::new(
            tags::CODE_MEANING,
            VR::LO,
            PrimitiveValue::from("Basic Application Confidentiality Profile"),
        ),
    ]);
    obj.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![code]),
    ));
    done
}

fn apply(obj: &mut InMemDicomObject, key: &DeidentifyKey, done: &mut Deidentified) {
    let present: Vec<(Tag, VR)> = obj.iter().map(|e| (e.tag(), e.vr())).collect();
    for (tag, vr) in present {
        if tag.0 % 2 == 1 {
            obj.remove_element(tag);
            done.private_removed += 1;
            continue;
        }
        match (action_for(tag), vr) {
            (Some(Action::Remove), _) => {
                obj.remove_element(tag);
                done.removed += 1;
            }
            (Some(Action::Zero), VR::SQ) => {
                obj.put(DataElement::new(
                    tag,
                    VR::SQ,
                    DataSetSequence::from(Vec::<InMemDicomObject>::new()),
                ));
                done.emptied += 1;
            }
            (Some(Action::Zero), _) => {
                obj.put(DataElement::empty(tag, vr));
                done.emptied += 1;
            }
            (_, VR::SQ) => {
                obj.update_value(tag, |value| {
                    if let Some(items) = value.items_mut() {
                        for item in items.iter_mut() {
                            apply(item, key, done);
                        }
                    }
                });
            }
            (Some(Action::Uid | Action::Dummy), VR::UI) => {
                let mapped: Option<(Vec<String>, usize)> = obj.element(tag).ok().map(|e| {
                    let old = e.to_multi_str().unwrap_or_default();
                    let new: Vec<String> = old.iter().map(|u| key.map_uid(u)).collect();
                    let changed = old.iter().zip(&new).filter(|(a, b)| a != b).count();
                    (new, changed)
                });
                if let Some((values, changed)) = mapped {
                    done.uids_replaced += changed;
                    obj.put(DataElement::new(
                        tag,
                        VR::UI,
                        PrimitiveValue::Strs(values.into()),
                    ));
                }
            }
            (Some(Action::Dummy | Action::Uid), _) => {
                obj.put(dummy(tag, vr));
                done.dummies += 1;
            }
            (None, _) => {}
        }
    }
}

/// A non-empty value of `vr` that says nothing (binary VRs: empty, as no dummy bytes
/// would mean anything).
fn dummy(tag: Tag, vr: VR) -> DataElement<InMemDicomObject> {
    let text = |s: &str| DataElement::new(tag, vr, PrimitiveValue::from(s));
    match vr {
        VR::DA => text("19000101"),
        VR::TM => text("000000"),
        VR::DT => text("19000101000000"),
        VR::AS => text("000D"),
        VR::IS | VR::DS => text("0"),
        VR::PN | VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC | VR::CS | VR::AE => {
            text(DUMMY_TEXT)
        }
        VR::US => DataElement::new(tag, vr, PrimitiveValue::from(0u16)),
        VR::SS => DataElement::new(tag, vr, PrimitiveValue::from(0i16)),
        VR::UL => DataElement::new(tag, vr, PrimitiveValue::from(0u32)),
        VR::SL => DataElement::new(tag, vr, PrimitiveValue::from(0i32)),
        VR::FL => DataElement::new(tag, vr, PrimitiveValue::from(0f32)),
        VR::FD => DataElement::new(tag, vr, PrimitiveValue::from(0f64)),
        _ => DataElement::new(tag, vr, Value::Primitive(PrimitiveValue::Empty)),
    }
}

/// A DICOM file read whole (every length checked first, as for every DICOM read) and
/// de-identified, ready to be written or sent.
#[derive(Debug)]
pub struct DeidentifiedFile {
    object: InMemDicomObject,
    /// The transfer syntax its data set is encoded in (a deflated file's: Explicit VR
    /// Little Endian, as read).
    pub transfer_syntax: String,
    pub summary: Deidentified,
}

/// Reads `path` whole and applies [`deidentify`] with `key`.
pub fn deidentify_file(path: &Path, key: &DeidentifyKey) -> Result<DeidentifiedFile> {
    let bytes = std::fs::read(path).with_path(path)?;
    deidentify_bytes(&bytes, key).map_err(|m| Error::new(path, ErrorKind::Dicom(m)))
}

/// [`deidentify_file`] of a file's bytes (what the fuzz target drives).
pub fn deidentify_bytes(
    bytes: &[u8],
    key: &DeidentifyKey,
) -> std::result::Result<DeidentifiedFile, String> {
    let file = super::parse::parse(bytes, false)?;
    let transfer_syntax = file
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_owned();
    let meta_instance = file.meta().media_storage_sop_instance_uid().to_owned();
    let meta_class = file.meta().media_storage_sop_class_uid().to_owned();
    let mut object = file.into_inner();
    let filled = fill_blank_identity(&mut object, &meta_class, &meta_instance, key);
    let mut done = DeidentifiedFile::new(object, transfer_syntax, key);
    done.summary.warnings.extend(filled);
    Ok(done)
}

/// Fills a blank SOP Class / Instance UID from the file meta group and a blank Study /
/// Series Instance UID with one derived (keyed) from the Frame of Reference UID, so that
/// an already anonymised series still has one study and one series after
/// de-identification. One warning per filled UID.
fn fill_blank_identity(
    object: &mut InMemDicomObject,
    meta_class: &str,
    meta_instance: &str,
    key: &DeidentifyKey,
) -> Vec<String> {
    let blank = |object: &InMemDicomObject, tag: Tag| {
        object
            .element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .is_none_or(|v| v.trim_end_matches(['\0', ' ']).is_empty())
    };
    let frame_of_reference = (!blank(object, tags::FRAME_OF_REFERENCE_UID))
        .then(|| object.element(tags::FRAME_OF_REFERENCE_UID).ok())
        .flatten()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
        });
    let mut warnings = Vec::new();
    let candidates = [
        (
            tags::SOP_CLASS_UID,
            "SOP Class UID",
            Some(meta_class.trim_end_matches(['\0', ' ']).to_owned()),
        ),
        (
            tags::SOP_INSTANCE_UID,
            "SOP Instance UID",
            Some(meta_instance.trim_end_matches(['\0', ' ']).to_owned()),
        ),
        (
            tags::STUDY_INSTANCE_UID,
            "Study Instance UID",
            frame_of_reference
                .as_ref()
                .map(|f| format!("2.25.0.{}", study_or_series_seed(key, "study", f))),
        ),
        (
            tags::SERIES_INSTANCE_UID,
            "Series Instance UID",
            frame_of_reference
                .as_ref()
                .map(|f| format!("2.25.0.{}", study_or_series_seed(key, "series", f))),
        ),
    ];
    for (tag, name, value) in candidates {
        if !blank(object, tag) {
            continue;
        }
        match value.filter(|v| !v.is_empty()) {
            Some(v) => {
                object.put(DataElement::new(
                    tag,
                    VR::UI,
                    PrimitiveValue::from(v.as_str()),
                ));
                warnings.push(format!(
                    "blank {name} filled before de-identification (from the file meta group, or derived from the Frame of Reference UID)"
                ));
            }
            None => warnings.push(format!("blank {name}, and nothing to fill it from")),
        }
    }
    warnings
}

/// Digits naming the study or series of a Frame of Reference (only ever mapped through
/// [`DeidentifyKey::map_uid`] afterwards, so the value itself never leaves).
fn study_or_series_seed(key: &DeidentifyKey, kind: &str, frame_of_reference: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(key.0)
        .chain_update(kind.as_bytes())
        .chain_update([0u8])
        .chain_update(frame_of_reference.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes) >> 1
}

impl DeidentifiedFile {
    /// Applies [`deidentify`] to a data set already read (encoded in `transfer_syntax`).
    pub fn new(mut object: InMemDicomObject, transfer_syntax: String, key: &DeidentifyKey) -> Self {
        let summary = deidentify(&mut object, key);
        Self {
            object,
            transfer_syntax,
            summary,
        }
    }

    /// The new Study Instance UID (empty when absent).
    pub fn study_uid(&self) -> String {
        self.uid(tags::STUDY_INSTANCE_UID)
    }

    /// The new Series Instance UID (empty when absent).
    pub fn series_uid(&self) -> String {
        self.uid(tags::SERIES_INSTANCE_UID)
    }

    /// The new SOP Instance UID (empty when absent).
    pub fn sop_instance_uid(&self) -> String {
        self.uid(tags::SOP_INSTANCE_UID)
    }

    fn uid(&self, tag: Tag) -> String {
        self.object
            .element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
            .unwrap_or_default()
    }

    /// The data set alone, encoded in [`DeidentifiedFile::transfer_syntax`] (what a
    /// C-STORE sends).
    pub fn data_set_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        let ts = TransferSyntaxRegistry
            .get(&self.transfer_syntax)
            .ok_or_else(|| format!("transfer syntax {} is unknown", self.transfer_syntax))?;
        let mut bytes = Vec::new();
        self.object
            .write_dataset_with_ts(&mut bytes, ts)
            .map_err(|e| format!("cannot encode the de-identified data set: {e}"))?;
        Ok(bytes)
    }

    /// The de-identified object as a Part-10 file in memory (preamble, a new file meta
    /// group naming its new SOP Instance UID, the same transfer syntax): what a STOW-RS
    /// request carries.
    pub fn part10_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        let file = self
            .object
            .clone()
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(self.transfer_syntax.as_str()))
            .map_err(|e| format!("cannot build the file meta group: {e}"))?;
        let mut bytes = Vec::new();
        file.write_all(&mut bytes)
            .map_err(|e| format!("cannot encode the de-identified file: {e}"))?;
        Ok(bytes)
    }

    /// Writes the de-identified object to `out` (a new file meta group naming its new
    /// SOP Instance UID; the same transfer syntax), atomically.
    pub fn write(&self, out: &Path) -> Result<()> {
        super::derived::write_file_in(self.object.clone(), &self.transfer_syntax, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, vr, PrimitiveValue::from(v))
    }

    fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
        obj.element(tag)
            .ok()
            .map(|e| e.to_str().unwrap_or_default().to_string())
    }

    #[test]
    fn the_table_is_read_whole_and_names_the_identity() {
        assert_eq!(table_len(), 654);
        assert_eq!(action_for(tags::PATIENT_NAME), Some(Action::Zero));
        assert_eq!(action_for(tags::PATIENT_ID), Some(Action::Dummy)); // Z/D
        assert_eq!(action_for(tags::PATIENT_BIRTH_DATE), Some(Action::Zero));
        assert_eq!(action_for(tags::SOP_INSTANCE_UID), Some(Action::Uid));
        assert_eq!(action_for(tags::INSTITUTION_NAME), Some(Action::Dummy)); // X/Z/D
        assert_eq!(
            action_for(tags::OTHER_PATIENT_I_DS_SEQUENCE),
            Some(Action::Remove)
        );
        assert_eq!(action_for(Tag(0x6002, 0x3000)), Some(Action::Remove)); // overlay data
        assert_eq!(action_for(Tag(0x6002, 0x0010)), None); // overlay rows: kept
        assert_eq!(action_for(tags::SOP_CLASS_UID), None);
        assert_eq!(action_for(tags::PIXEL_DATA), None);
    }

    #[test]
    fn identity_goes_structure_stays_and_uids_map_consistently() {
        let study = "1.2.3.4.5.6";
        let reference = InMemDicomObject::from_element_iter([
            s(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                "1.2.840.10008.5.1.4.1.1.2",
            ),
            s(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "1.2.3.4.5.6.7.1"),
            s(tags::PATIENT_NAME, VR::PN, "Nested^Name"),
        ]);
        let mut obj = InMemDicomObject::from_element_iter([
            s(tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
            s(tags::PATIENT_ID, VR::LO, "MRN123"),
            s(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
            s(tags::STUDY_INSTANCE_UID, VR::UI, study),
            s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
            s(
                tags::FRAME_OF_REFERENCE_UID,
                VR::UI,
                "1.2.840.10008.1.4.1.1",
            ),
            s(tags::INSTITUTION_NAME, VR::LO, "General Hospital"),
            s(tags::MODALITY, VR::CS, "CT"),
            s(Tag(0x0009, 0x0010), VR::LO, "VENDOR"),
            s(Tag(0x0009, 0x1001), VR::LO, "secret"),
            s(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"),
            DataElement::new(
                tags::REFERENCED_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![reference]),
            ),
        ]);
        let key = DeidentifyKey::from_secret("site secret");
        let done = deidentify(&mut obj, &key);
        assert_eq!(text(&obj, tags::PATIENT_NAME).as_deref(), Some(""));
        assert_eq!(text(&obj, tags::PATIENT_ID).as_deref(), Some(DUMMY_TEXT));
        assert_eq!(text(&obj, tags::PATIENT_BIRTH_DATE).as_deref(), Some(""));
        assert_eq!(
            text(&obj, tags::INSTITUTION_NAME).as_deref(),
            Some(DUMMY_TEXT)
        );
        assert_eq!(text(&obj, tags::MODALITY).as_deref(), Some("CT"));
        assert_eq!(
            text(&obj, tags::SOP_CLASS_UID).as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        assert_eq!(
            text(&obj, tags::FRAME_OF_REFERENCE_UID).as_deref(),
            Some("1.2.840.10008.1.4.1.1"),
            "DICOM's own UIDs are kept"
        );
        let new_study = text(&obj, tags::STUDY_INSTANCE_UID).unwrap();
        assert_eq!(new_study, key.map_uid(study));
        assert!(new_study.starts_with("2.25.") && new_study.len() <= 64);
        assert_ne!(
            new_study,
            DeidentifyKey::from_secret("other").map_uid(study)
        );
        assert!(obj.element(Tag(0x0009, 0x0010)).is_err());
        assert!(obj.element(Tag(0x0009, 0x1001)).is_err());
        let items = obj
            .element(tags::REFERENCED_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(
            text(&items[0], tags::REFERENCED_SOP_INSTANCE_UID),
            Some(key.map_uid("1.2.3.4.5.6.7.1"))
        );
        assert_eq!(text(&items[0], tags::PATIENT_NAME).as_deref(), Some(""));
        assert_eq!(
            text(&obj, tags::PATIENT_IDENTITY_REMOVED).as_deref(),
            Some("YES")
        );
        assert_eq!(done.private_removed, 2);
        assert_eq!(done.uids_replaced, 2);
        assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
    }
}
