//! DIMSE command sets: reading a request (C-STORE-RQ, C-ECHO-RQ) and writing the
//! response (PS3.7 §9.3). Command sets are always Implicit VR Little Endian.

use dicom_core::{dicom_value, DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use crate::dataset::scan;

/// Command Field of a C-STORE-RQ.
pub const C_STORE_RQ: u16 = 0x0001;
/// Command Field of a C-STORE-RSP.
pub const C_STORE_RSP: u16 = 0x8001;
/// Command Field of a C-ECHO-RQ.
pub const C_ECHO_RQ: u16 = 0x0030;
/// Command Field of a C-ECHO-RSP.
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;
/// Largest command set accepted (a real one is a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// DIMSE status codes this node answers with.
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (the instance could not be written or was too large).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand (malformed data set, missing or unsafe UIDs).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

/// The fields of a request command set this node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    /// False when Command Data Set Type is 0x0101.
    pub has_data_set: bool,
}

/// Reads a command set (length-checked, see [`crate::dataset::scan`]).
pub fn parse_command(bytes: &[u8]) -> Result<Command, String> {
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let scanned = scan(
        bytes,
        &ts,
        &[
            tags::COMMAND_FIELD,
            tags::MESSAGE_ID,
            tags::AFFECTED_SOP_CLASS_UID,
            tags::AFFECTED_SOP_INSTANCE_UID,
            tags::COMMAND_DATA_SET_TYPE,
        ],
    )
    .map_err(|e| format!("command set: {e}"))?;
    let field = scanned
        .u16(tags::COMMAND_FIELD)
        .ok_or("command set without Command Field (0000,0100)")?;
    let message_id = scanned
        .u16(tags::MESSAGE_ID)
        .ok_or("command set without Message ID (0000,0110)")?;
    let data_set_type = scanned
        .u16(tags::COMMAND_DATA_SET_TYPE)
        .ok_or("command set without Command Data Set Type (0000,0800)")?;
    Ok(Command {
        field,
        message_id,
        affected_sop_class_uid: scanned.text(tags::AFFECTED_SOP_CLASS_UID),
        affected_sop_instance_uid: scanned.text(tags::AFFECTED_SOP_INSTANCE_UID),
        has_data_set: data_set_type != NO_DATA_SET,
    })
}

/// A response's Affected SOP Class UID: the request's, when it named one.
fn affected_class(request: &Command) -> Option<DataElement<InMemDicomObject>> {
    request.affected_sop_class_uid.as_ref().map(|class| {
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, class.as_str()),
        )
    })
}

/// The C-ECHO-RSP (success) to `request`.
pub fn echo_response(request: &Command) -> Result<Vec<u8>, String> {
    let mut elements: Vec<_> = affected_class(request).into_iter().collect();
    elements.extend(common(C_ECHO_RSP, request.message_id, status::SUCCESS));
    encode(elements)
}

/// The C-STORE-RSP to `request` with `status`; `comment` (Error Comment, cut to 64
/// printable characters) on failures.
pub fn store_response(
    request: &Command,
    status: u16,
    comment: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut elements: Vec<_> = affected_class(request).into_iter().collect();
    elements.extend(common(C_STORE_RSP, request.message_id, status));
    if let Some(instance) = &request.affected_sop_instance_uid {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            dicom_value!(Str, instance.as_str()),
        ));
    }
    if let Some(comment) = comment.filter(|_| status != status::SUCCESS) {
        let text: String = comment
            .chars()
            .map(|c| {
                if (' '..='~').contains(&c) && c != '\\' {
                    c
                } else {
                    '?'
                }
            })
            .take(64)
            .collect();
        elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            dicom_value!(Str, text.as_str()),
        ));
    }
    encode(elements)
}

fn common(field: u16, message_id: u16, status: u16) -> [DataElement<InMemDicomObject>; 4] {
    [
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [field])),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [status])),
    ]
}

fn encode(elements: Vec<DataElement<InMemDicomObject>>) -> Result<Vec<u8>, String> {
    let object = InMemDicomObject::command_from_element_iter(elements);
    let mut bytes = Vec::new();
    object
        .write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| format!("cannot encode a response command: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_reads_back_as_a_command() {
        let request = Command {
            field: C_STORE_RQ,
            message_id: 7,
            affected_sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            affected_sop_instance_uid: Some("1.2.3.4".into()),
            has_data_set: true,
        };
        let bytes = store_response(&request, status::CANNOT_UNDERSTAND, Some("bad\\uid")).unwrap();
        let read = |bytes: &[u8]| {
            InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .unwrap()
        };
        let number = |o: &InMemDicomObject, tag| o.element(tag).unwrap().to_int::<u16>().unwrap();
        let object = read(&bytes);
        assert_eq!(number(&object, tags::COMMAND_FIELD), C_STORE_RSP);
        assert_eq!(number(&object, tags::MESSAGE_ID_BEING_RESPONDED_TO), 7);
        assert_eq!(number(&object, tags::COMMAND_DATA_SET_TYPE), NO_DATA_SET);
        assert_eq!(number(&object, tags::STATUS), 0xC000);
        let text = |o: &InMemDicomObject, tag| {
            o.element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_matches(['\0', ' '])
                .to_string()
        };
        assert_eq!(text(&object, tags::AFFECTED_SOP_INSTANCE_UID), "1.2.3.4");
        assert_eq!(text(&object, tags::ERROR_COMMENT), "bad?uid");
        let echo = read(&echo_response(&request).unwrap());
        assert_eq!(number(&echo, tags::COMMAND_FIELD), C_ECHO_RSP);
        assert_eq!(number(&echo, tags::STATUS), 0);
    }
}
