//! The JSON Schema of every report, generated from the report types and published in
//! `docs/schemas/` (a test keeps the files equal to what this module generates).

use schemars::{schema_for, JsonSchema, Schema};

use crate::report::Report;

/// `(file name, schema)` of every report, in a fixed order.
pub fn all() -> Vec<(String, Schema)> {
    vec![
        entry::<crate::info::VolumeReport>(),
        entry::<crate::needle::NeedleReport>(),
        entry::<crate::vessel::RouteReport>(),
        entry::<crate::vessel::MeasureReport>(),
        entry::<crate::ablation::AblationReport>(),
        entry::<crate::register::RegistrationReport>(),
        entry::<crate::evla::EvlaReport>(),
        entry::<crate::control_ct::CtRegistrationReport>(),
        entry::<crate::verify::NeedleCheckReport>(),
        entry::<crate::confirm::ConfirmationReport>(),
        entry::<crate::dicom_export::SegExportReport>(),
        entry::<crate::dicom_export::SrExportReport>(),
        entry::<crate::dicom_export::ScExportReport>(),
        entry::<crate::deidentify::DeidentifyReport>(),
        named::<pinhole_guidance::GuidanceMetrics>("guidance-metrics"),
        named::<pinhole_guidance::session::SessionResponse>("session"),
    ]
}

fn entry<T: Report + JsonSchema>() -> (String, Schema) {
    named::<T>(T::NAME)
}

fn named<T: JsonSchema>(name: &str) -> (String, Schema) {
    (format!("{name}.schema.json"), schema_for!(T))
}

/// A schema as the file holds it (pretty JSON, trailing newline).
pub fn to_file_text(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
