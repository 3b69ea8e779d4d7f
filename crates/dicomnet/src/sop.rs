//! What this node negotiates: the storage SOP classes it accepts (plus Verification)
//! and the transfer syntaxes.

use dicom_dictionary_std::uids::*;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Storage SOP classes accepted as abstract syntaxes: the images of interventional
/// radiology (CT, MR, PET, NM, US, XA/XRF, DX/CR, secondary capture) and the objects
/// that come with them (segmentations, registrations, RT, structured reports, PDF,
/// presentation states). Others are refused per presentation context
/// ("abstract syntax not supported").
pub const STORAGE_SOP_CLASSES: &[&str] = &[
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
    ENHANCED_MR_COLOR_IMAGE_STORAGE,
    POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
    ENHANCED_PET_IMAGE_STORAGE,
    LEGACY_CONVERTED_ENHANCED_PET_IMAGE_STORAGE,
    NUCLEAR_MEDICINE_IMAGE_STORAGE,
    ULTRASOUND_IMAGE_STORAGE,
    ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
    ENHANCED_US_VOLUME_STORAGE,
    X_RAY_ANGIOGRAPHIC_IMAGE_STORAGE,
    ENHANCED_XA_IMAGE_STORAGE,
    X_RAY_RADIOFLUOROSCOPIC_IMAGE_STORAGE,
    ENHANCED_XRF_IMAGE_STORAGE,
    X_RAY3_D_ANGIOGRAPHIC_IMAGE_STORAGE,
    X_RAY3_D_CRANIOFACIAL_IMAGE_STORAGE,
    DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PROCESSING,
    COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    BREAST_TOMOSYNTHESIS_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    MULTI_FRAME_SINGLE_BIT_SECONDARY_CAPTURE_IMAGE_STORAGE,
    MULTI_FRAME_GRAYSCALE_BYTE_SECONDARY_CAPTURE_IMAGE_STORAGE,
    MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
    MULTI_FRAME_TRUE_COLOR_SECONDARY_CAPTURE_IMAGE_STORAGE,
    PARAMETRIC_MAP_STORAGE,
    SEGMENTATION_STORAGE,
    SURFACE_SEGMENTATION_STORAGE,
    SPATIAL_REGISTRATION_STORAGE,
    DEFORMABLE_SPATIAL_REGISTRATION_STORAGE,
    RT_IMAGE_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    RT_PLAN_STORAGE,
    RT_DOSE_STORAGE,
    BASIC_TEXT_SR_STORAGE,
    ENHANCED_SR_STORAGE,
    COMPREHENSIVE_SR_STORAGE,
    COMPREHENSIVE3_DSR_STORAGE,
    KEY_OBJECT_SELECTION_DOCUMENT_STORAGE,
    X_RAY_RADIATION_DOSE_SR_STORAGE,
    ENCAPSULATED_PDF_STORAGE,
    GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
];

/// The Verification SOP class (C-ECHO).
pub const VERIFICATION_SOP_CLASS: &str = VERIFICATION;

/// Single-frame image classes whose series `pinhole_io::dicom` reads as a volume; a
/// completed series of these is checked with `list_series`.
pub const VOLUME_SOP_CLASSES: &[&str] = &[
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
];

/// Transfer syntaxes accepted, the SCU's order of proposal deciding among them: every
/// one dicom-rs's registry can read a data set of — native (implicit / explicit VR,
/// little or big endian) and encapsulated (JPEG, JPEG-LS, JPEG 2000, RLE, ...: stored
/// as received, decodable or not). Deflated data sets are not accepted (their claimed
/// lengths cannot be checked before inflating).
pub fn accepted_transfer_syntaxes() -> Vec<&'static str> {
    let mut uids: Vec<&'static str> = TransferSyntaxRegistry
        .iter()
        .filter(|ts| ts.is_codec_free() || ts.is_encapsulated_pixel_data())
        .map(|ts| ts.uid())
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_jpeg2000_accepted_deflate_not() {
        let uids = accepted_transfer_syntaxes();
        for uid in [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.5",
        ] {
            assert!(uids.contains(&uid), "{uid} missing from {uids:?}");
        }
        assert!(!uids.contains(&"1.2.840.10008.1.2.1.99"));
        assert!(STORAGE_SOP_CLASSES.contains(&CT_IMAGE_STORAGE));
    }
}
