//! DIMSE command sets (PS3.7 §9.3), always Implicit VR Little Endian: as the SCP,
//! reading a request (C-STORE-RQ, C-ECHO-RQ) and writing the response; as the SCU
//! ([`crate::push`], [`crate::query`]), writing the request (C-STORE, C-ECHO, C-FIND,
//! C-MOVE, C-CANCEL) and reading the response's status and sub-operation counts.

use dicom_core::{dicom_value, DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use crate::dataset::{scan, Scanned};

/// Command Field of a C-STORE-RQ.
pub const C_STORE_RQ: u16 = 0x0001;
/// Command Field of a C-STORE-RSP.
pub const C_STORE_RSP: u16 = 0x8001;
/// Command Field of a C-ECHO-RQ.
pub const C_ECHO_RQ: u16 = 0x0030;
/// Command Field of a C-ECHO-RSP.
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Field of a C-FIND-RQ.
pub const C_FIND_RQ: u16 = 0x0020;
/// Command Field of a C-FIND-RSP.
pub const C_FIND_RSP: u16 = 0x8020;
/// Command Field of a C-MOVE-RQ.
pub const C_MOVE_RQ: u16 = 0x0021;
/// Command Field of a C-MOVE-RSP.
pub const C_MOVE_RSP: u16 = 0x8021;
/// Command Field of a C-GET-RQ.
pub const C_GET_RQ: u16 = 0x0010;
/// Command Field of a C-GET-RSP.
pub const C_GET_RSP: u16 = 0x8010;
/// Command Field of a C-CANCEL-RQ.
pub const C_CANCEL_RQ: u16 = 0x0FFF;
/// Command Data Set Type meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;
/// Command Data Set Type of a request that a data set follows (any value but 0x0101;
/// 0x0000 by convention).
pub const DATA_SET_PRESENT: u16 = 0x0000;
/// Priority MEDIUM (PS3.7 §9.1.1.1).
pub const PRIORITY_MEDIUM: u16 = 0x0000;
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

/// What a status code means (PS3.7 Annex C): the class of the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 0x0000.
    Success,
    /// 0x0001, 0x0107, 0x0116, 0xB000-0xBFFF: done, with a remark (coercion of data
    /// elements, elements discarded, data set does not match SOP class).
    Warning,
    /// 0xFE00.
    Cancel,
    /// 0xFF00, 0xFF01 (never final for C-STORE / C-ECHO).
    Pending,
    /// Everything else: 0xA000-0xAFFF (refused), 0xC000-0xCFFF (cannot understand),
    /// 0x01xx / 0x02xx (general failures), and codes no standard defines.
    Failure,
}

/// The class of `status` (see [`StatusClass`]).
pub fn status_class(status: u16) -> StatusClass {
    match status {
        0x0000 => StatusClass::Success,
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusClass::Warning,
        0xFE00 => StatusClass::Cancel,
        0xFF00 | 0xFF01 => StatusClass::Pending,
        _ => StatusClass::Failure,
    }
}

/// A few words on a status code of a C-STORE-RSP / C-ECHO-RSP (PS3.4 Annex B.2.3,
/// PS3.7 Annex C).
pub fn status_text(status: u16) -> &'static str {
    let exact = match status {
        0x0000 => Some("success"),
        0x0001 => Some("warning"),
        0x0107 => Some("warning: attribute list error"),
        0x0116 => Some("warning: attribute value out of range"),
        0xB000 => Some("warning: coercion of data elements"),
        0xB006 => Some("warning: elements discarded"),
        0xB007 => Some("warning: data set does not match SOP class"),
        0x0110 => Some("failure: processing failure"),
        0x0111 => Some("failure: duplicate SOP instance"),
        0x0117 => Some("failure: invalid object instance"),
        0x0122 => Some("failure: SOP class not supported"),
        0x0124 => Some("failure: not authorized"),
        0x0210 => Some("failure: duplicate invocation"),
        0x0211 => Some("failure: unrecognized operation"),
        0x0212 => Some("failure: mistyped argument"),
        0x0213 => Some("failure: resource limitation"),
        0xA801 => Some("refused: move destination unknown"),
        0xFE00 => Some("cancelled"),
        0xFF00 => Some("pending"),
        0xFF01 => Some("pending (optional keys not supported)"),
        _ => None,
    };
    exact.unwrap_or(match status >> 8 {
        0xA7 => "refused: out of resources",
        0xA9 => "error: data set does not match SOP class",
        0xA0..=0xAF => "refused",
        0xB0..=0xBF => "warning",
        0xC0..=0xCF => "error: cannot understand",
        _ => "failure (unknown status code)",
    })
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
    let what = "command set";
    let scanned = scan_command_set(
        bytes,
        what,
        &[
            tags::COMMAND_FIELD,
            tags::MESSAGE_ID,
            tags::AFFECTED_SOP_CLASS_UID,
            tags::AFFECTED_SOP_INSTANCE_UID,
            tags::COMMAND_DATA_SET_TYPE,
        ],
    )?;
    let required = |tag, name| required_u16(&scanned, tag, what, name);
    let field = required(tags::COMMAND_FIELD, "Command Field (0000,0100)")?;
    let message_id = required(tags::MESSAGE_ID, "Message ID (0000,0110)")?;
    let data_set_type = required(
        tags::COMMAND_DATA_SET_TYPE,
        "Command Data Set Type (0000,0800)",
    )?;
    Ok(Command {
        field,
        message_id,
        affected_sop_class_uid: scanned.text(tags::AFFECTED_SOP_CLASS_UID),
        affected_sop_instance_uid: scanned.text(tags::AFFECTED_SOP_INSTANCE_UID),
        has_data_set: data_set_type != NO_DATA_SET,
    })
}

/// Walks a command set (implicit VR little endian) for `wanted`; errors name `what`.
fn scan_command_set(bytes: &[u8], what: &str, wanted: &[Tag]) -> Result<Scanned, String> {
    scan(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased(), wanted).map_err(|e| format!("{what}: {e}"))
}

/// A US element the command set must carry: "`what` without `name`" when it does not.
fn required_u16(scanned: &Scanned, tag: Tag, what: &str, name: &str) -> Result<u16, String> {
    scanned
        .u16(tag)
        .ok_or_else(|| format!("{what} without {name}"))
}

/// The fields of a response command set (C-STORE-RSP, C-ECHO-RSP, C-FIND-RSP,
/// C-MOVE-RSP) the SCU uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub field: u16,
    pub message_id_being_responded_to: u16,
    pub status: u16,
    pub affected_sop_instance_uid: Option<String>,
    /// Error Comment (0000,0902), when the peer gave one.
    pub error_comment: Option<String>,
    /// False when Command Data Set Type is 0x0101 (as it must be for C-STORE-RSP and
    /// C-ECHO-RSP; a pending C-FIND-RSP carries an identifier).
    pub has_data_set: bool,
    /// Number of Remaining / Completed / Failed / Warning Sub-operations (0000,1020 to
    /// 0000,1023) of a C-MOVE-RSP, each when present.
    pub sub_operations: SubOperations,
}

/// The sub-operation counts of a C-MOVE-RSP (or C-GET-RSP), each when present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
}

/// Reads a response command set (length-checked, see [`crate::dataset::scan`]).
pub fn parse_response(bytes: &[u8]) -> Result<Response, String> {
    let scanned = scan_command_set(
        bytes,
        "response command set",
        &[
            tags::COMMAND_FIELD,
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            tags::STATUS,
            tags::AFFECTED_SOP_INSTANCE_UID,
            tags::ERROR_COMMENT,
            tags::COMMAND_DATA_SET_TYPE,
            tags::NUMBER_OF_REMAINING_SUBOPERATIONS,
            tags::NUMBER_OF_COMPLETED_SUBOPERATIONS,
            tags::NUMBER_OF_FAILED_SUBOPERATIONS,
            tags::NUMBER_OF_WARNING_SUBOPERATIONS,
        ],
    )?;
    let required = |tag, name| required_u16(&scanned, tag, "response", name);
    let field = required(tags::COMMAND_FIELD, "Command Field (0000,0100)")?;
    let message_id_being_responded_to = required(
        tags::MESSAGE_ID_BEING_RESPONDED_TO,
        "Message ID Being Responded To (0000,0120)",
    )?;
    let status = required(tags::STATUS, "Status (0000,0900)")?;
    let data_set_type = required(
        tags::COMMAND_DATA_SET_TYPE,
        "Command Data Set Type (0000,0800)",
    )?;
    Ok(Response {
        field,
        message_id_being_responded_to,
        status,
        affected_sop_instance_uid: scanned.text(tags::AFFECTED_SOP_INSTANCE_UID),
        error_comment: scanned.text(tags::ERROR_COMMENT),
        has_data_set: data_set_type != NO_DATA_SET,
        sub_operations: SubOperations {
            remaining: scanned.u16(tags::NUMBER_OF_REMAINING_SUBOPERATIONS),
            completed: scanned.u16(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
            failed: scanned.u16(tags::NUMBER_OF_FAILED_SUBOPERATIONS),
            warning: scanned.u16(tags::NUMBER_OF_WARNING_SUBOPERATIONS),
        },
    })
}

/// The C-STORE-RQ command set (priority medium, a data set follows; no Move
/// Originator).
pub fn store_request(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Result<Vec<u8>, String> {
    let mut elements: Vec<_> = request_with_data_set(C_STORE_RQ, message_id, sop_class_uid).into();
    elements.push(DataElement::new(
        tags::AFFECTED_SOP_INSTANCE_UID,
        VR::UI,
        dicom_value!(Str, sop_instance_uid),
    ));
    encode(elements)
}

/// The C-ECHO-RQ command set.
pub fn echo_request(message_id: u16) -> Result<Vec<u8>, String> {
    encode(vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, crate::sop::VERIFICATION_SOP_CLASS),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [C_ECHO_RQ])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
    ])
}

/// The C-FIND-RQ command set on `sop_class_uid` (a query / retrieve information model;
/// priority medium; the identifier follows).
pub fn find_request(message_id: u16, sop_class_uid: &str) -> Result<Vec<u8>, String> {
    encode(request_with_data_set(C_FIND_RQ, message_id, sop_class_uid).into())
}

/// The C-MOVE-RQ command set on `sop_class_uid`, sending the matches to the AE title
/// `destination` (Move Destination, 0000,0600; priority medium; the identifier follows).
pub fn move_request(
    message_id: u16,
    sop_class_uid: &str,
    destination: &str,
) -> Result<Vec<u8>, String> {
    let mut elements: Vec<_> = request_with_data_set(C_MOVE_RQ, message_id, sop_class_uid).into();
    elements.push(DataElement::new(
        tags::MOVE_DESTINATION,
        VR::AE,
        dicom_value!(Str, destination),
    ));
    encode(elements)
}

/// The C-GET-RQ command set on `sop_class_uid` (priority medium; the identifier
/// follows; the matches come back as C-STORE-RQs on the same association).
pub fn get_request(message_id: u16, sop_class_uid: &str) -> Result<Vec<u8>, String> {
    encode(request_with_data_set(C_GET_RQ, message_id, sop_class_uid).into())
}

/// The C-CANCEL-RQ command set for the C-FIND / C-MOVE request `message_id`.
pub fn cancel_request(message_id: u16) -> Result<Vec<u8>, String> {
    encode(vec![
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            dicom_value!(U16, [C_CANCEL_RQ]),
        ),
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
    ])
}

/// What every request followed by a data set carries (C-STORE-, C-FIND-, C-MOVE-RQ):
/// affected SOP class, command field, message ID, priority medium, data set present.
fn request_with_data_set(
    field: u16,
    message_id: u16,
    sop_class_uid: &str,
) -> [DataElement<InMemDicomObject>; 5] {
    [
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            dicom_value!(Str, sop_class_uid),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [field])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [PRIORITY_MEDIUM])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [DATA_SET_PRESENT]),
        ),
    ]
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
        .map_err(|e| format!("cannot encode a command set: {e}"))?;
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

    #[test]
    fn requests_read_back_and_responses_parse_through_the_length_checks() {
        let bytes = store_request(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45").unwrap();
        // The SCP's own parser reads the request.
        let command = parse_command(&bytes).unwrap();
        assert_eq!(command.field, C_STORE_RQ);
        assert_eq!(command.message_id, 9);
        assert!(command.has_data_set);
        assert_eq!(
            command.affected_sop_class_uid.as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        assert_eq!(
            command.affected_sop_instance_uid.as_deref(),
            Some("1.2.3.45")
        );
        // Command Group Length (0000,0000) comes first and counts the rest.
        assert_eq!(&bytes[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let group_length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        assert_eq!(group_length as usize, bytes.len() - 12);

        let echo = parse_command(&echo_request(3).unwrap()).unwrap();
        assert_eq!(
            (echo.field, echo.message_id, echo.has_data_set),
            (C_ECHO_RQ, 3, false)
        );

        let rsp = store_response(&command, 0xA700, Some("disk full")).unwrap();
        let response = parse_response(&rsp).unwrap();
        assert_eq!(response.field, C_STORE_RSP);
        assert_eq!(response.message_id_being_responded_to, 9);
        assert_eq!(response.status, 0xA700);
        assert_eq!(response.error_comment.as_deref(), Some("disk full"));
        assert_eq!(
            response.affected_sop_instance_uid.as_deref(),
            Some("1.2.3.45")
        );
        assert!(!response.has_data_set);
        // A truncated response is refused, not misread.
        assert!(parse_response(&rsp[..rsp.len() - 3]).is_err());
        // A request is not a response.
        assert!(parse_response(&bytes).is_err());
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(0), StatusClass::Success);
        for warning in [0x0001, 0x0107, 0x0116, 0xB000, 0xB007, 0xBFFF] {
            assert_eq!(status_class(warning), StatusClass::Warning, "{warning:04X}");
        }
        for failure in [0xA700, 0xA900, 0xC000, 0xCFFF, 0x0122, 0x0211, 0x1234] {
            assert_eq!(status_class(failure), StatusClass::Failure, "{failure:04X}");
        }
        assert_eq!(status_class(0xFE00), StatusClass::Cancel);
        assert_eq!(status_class(0xFF00), StatusClass::Pending);
        assert_eq!(status_text(0xA702), "refused: out of resources");
        assert_eq!(status_text(0xB000), "warning: coercion of data elements");
    }

    #[test]
    fn query_requests_and_move_responses() {
        let find = parse_command(&find_request(4, "1.2.840.10008.5.1.4.1.2.2.1").unwrap()).unwrap();
        assert_eq!((find.field, find.message_id), (C_FIND_RQ, 4));
        assert!(find.has_data_set);
        assert_eq!(
            find.affected_sop_class_uid.as_deref(),
            Some("1.2.840.10008.5.1.4.1.2.2.1")
        );
        let bytes = move_request(5, "1.2.840.10008.5.1.4.1.2.2.2", "PINHOLE").unwrap();
        let moved = parse_command(&bytes).unwrap();
        assert_eq!((moved.field, moved.message_id), (C_MOVE_RQ, 5));
        let scanned = scan(
            &bytes,
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            &[tags::MOVE_DESTINATION, tags::PRIORITY],
        )
        .unwrap();
        assert_eq!(
            scanned.text(tags::MOVE_DESTINATION).as_deref(),
            Some("PINHOLE")
        );
        assert_eq!(scanned.u16(tags::PRIORITY), Some(PRIORITY_MEDIUM));
        let cancel = cancel_request(5).unwrap();
        let scanned = scan(
            &cancel,
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            &[tags::COMMAND_FIELD, tags::MESSAGE_ID_BEING_RESPONDED_TO],
        )
        .unwrap();
        assert_eq!(scanned.u16(tags::COMMAND_FIELD), Some(C_CANCEL_RQ));
        assert_eq!(scanned.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO), Some(5));

        // A C-MOVE-RSP with its sub-operation counts.
        let mut elements: Vec<_> = common(C_MOVE_RSP, 5, 0xFF00).into();
        for (tag, n) in [
            (tags::NUMBER_OF_REMAINING_SUBOPERATIONS, 7u16),
            (tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, 12),
            (tags::NUMBER_OF_FAILED_SUBOPERATIONS, 1),
        ] {
            elements.push(DataElement::new(tag, VR::US, dicom_value!(U16, [n])));
        }
        let response = parse_response(&encode(elements).unwrap()).unwrap();
        assert_eq!(response.status, 0xFF00);
        assert_eq!(
            response.sub_operations,
            SubOperations {
                remaining: Some(7),
                completed: Some(12),
                failed: Some(1),
                warning: None
            }
        );
        assert_eq!(status_text(0xA801), "refused: move destination unknown");
    }
}
