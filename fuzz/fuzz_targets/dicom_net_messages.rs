//! Bytes a DICOM peer sends `pinhole-dicomnet`: a DIMSE command set (a request to the
//! C-STORE listener, or a response to the push / query client: C-STORE-, C-ECHO-,
//! C-FIND- and C-MOVE-RSP), or a data set in implicit or explicit VR little endian, walked
//! for the UIDs the listener files an instance under (and, the same walk, for a C-FIND
//! match's identifier). An answer or an error, never a panic, and no
//! allocation beyond what the bytes hold (the walk checks every claimed length).
#![no_main]

use dicom_dictionary_std::tags;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let wanted = [
        tags::STUDY_INSTANCE_UID,
        tags::SERIES_INSTANCE_UID,
        tags::SOP_INSTANCE_UID,
        tags::MODALITY,
    ];
    match selector % 4 {
        0 => {
            if let Ok(command) = pinhole_dicomnet::dimse::parse_command(bytes) {
                // An answer can always be built for a parsed C-ECHO request.
                let _ = pinhole_dicomnet::dimse::echo_response(&command);
            }
        }
        1 => {
            if let Ok(response) = pinhole_dicomnet::dimse::parse_response(bytes) {
                let _ = pinhole_dicomnet::dimse::status_text(response.status);
                let _ = pinhole_dicomnet::query::query_status_text(response.status, true);
            }
        }
        2 => {
            let _ = pinhole_dicomnet::dataset::scan(
                bytes,
                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                &wanted,
            );
        }
        _ => {
            let _ = pinhole_dicomnet::dataset::scan(
                bytes,
                &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
                &wanted,
            );
        }
    }
});
