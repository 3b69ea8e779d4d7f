//! Bytes a DICOM peer sends the C-STORE listener (`pinhole-dicomnet`): a DIMSE command
//! set, or a data set in implicit or explicit VR little endian, walked for the UIDs the
//! listener files an instance under. An answer or an error, never a panic, and no
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
    match selector % 3 {
        0 => {
            if let Ok(command) = pinhole_dicomnet::dimse::parse_command(bytes) {
                // An answer can always be built for a parsed C-ECHO request.
                let _ = pinhole_dicomnet::dimse::echo_response(&command);
            }
        }
        1 => {
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
