//! Describing a volume (`pinhole info`): [`VolumeReport`], as text or JSON.

use std::path::Path;

use pinhole_io::labels::LabelTable;
use pinhole_io::open::Loaded;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::inputs::{label_table, load_image, not_ct_reason, Image};
use crate::observe::Observer;
use crate::report::{unversioned, versioned_report, Report, DISCLAIMER};

/// A label present in a label map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LabelRow {
    pub id: u32,
    pub name: Option<String>,
    pub voxels: usize,
    pub ml: f64,
    pub centroid_lps: [f64; 3],
}

/// `pinhole info --json`: a volume's geometry, values and labels.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VolumeReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub path: String,
    pub format: String,
    pub series_uid: Option<String>,
    pub scalar_type: String,
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub origin_lps: [f64; 3],
    /// Row-major; columns are the i, j, k axis directions in LPS.
    pub direction: [[f64; 3]; 3],
    pub ijk_to_lps: [[f64; 4]; 4],
    pub orientation: String,
    pub bounds_lps: [[f64; 3]; 2],
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub is_label_map: bool,
    /// DICOM `Modality` of the series (`CT`, `MR` …); absent for NIfTI and NRRD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    /// Why the volume does not look like a CT in Hounsfield units
    /// ([`crate::inputs::not_ct_reason`]); absent when it does, and for label maps.
    /// Procedures refuse such a CT unless told to go on (`--allow-non-ct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ct: Option<String>,
    pub label_table: Option<String>,
    pub labels: Vec<LabelRow>,
    /// A colour DICOM series (read as RGB, `scalar_type` `rgb8` / `rgb16` / `rgb32`, `min`
    /// and `max` over every sample): its stored PhotometricInterpretation. Absent for
    /// greyscale volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour: Option<String>,
    pub warnings: Vec<String>,
    pub disclaimer: String,
}

impl VolumeReport {
    pub fn new(
        path: &str,
        loaded: &Loaded,
        table: Option<(&str, &LabelTable)>,
        force_labels: bool,
    ) -> Self {
        let volume = &loaded.volume;
        let grid = volume.grid();
        let range = volume.min_max();
        // A DICOM series is an image, never a label map (those come as SEG objects).
        let as_labels = if force_labels || (loaded.modality.is_none() && volume.looks_like_labels())
        {
            volume.to_labels()
        } else {
            None
        };
        let labels = as_labels
            .as_ref()
            .map(|l| label_rows(l, table.map(|t| t.1)))
            .unwrap_or_default();
        Self {
            format: loaded.format.name().to_owned(),
            series_uid: loaded.series_uid.clone(),
            min: range.map(|r| r.0),
            max: range.map(|r| r.1),
            is_label_map: as_labels.is_some(),
            modality: loaded.modality.clone(),
            not_ct: as_labels
                .is_none()
                .then(|| not_ct_reason(volume, loaded.modality.as_deref()))
                .flatten(),
            label_table: as_labels.and(table.map(|t| t.0.to_string())),
            labels,
            warnings: loaded.warnings.clone(),
            ..Self::geometry(path, grid, volume.scalar_type().name())
        }
    }

    /// The fields every report has: path, grid, scalar type; the rest empty.
    fn geometry(path: &str, grid: &pinhole_volume::Grid, scalar_type: &str) -> Self {
        let (lo, hi) = grid.bounds_lps();
        Self {
            schema_version: Self::SCHEMA_VERSION,
            path: path.to_string(),
            format: String::new(),
            series_uid: None,
            scalar_type: scalar_type.to_owned(),
            dims: grid.dims(),
            spacing_mm: grid.spacing_mm(),
            origin_lps: grid.origin_lps(),
            direction: grid.direction(),
            ijk_to_lps: grid.ijk_to_lps(),
            orientation: grid.orientation_code(),
            bounds_lps: [lo, hi],
            min: None,
            max: None,
            is_label_map: false,
            modality: None,
            not_ct: None,
            label_table: None,
            labels: Vec::new(),
            colour: None,
            warnings: Vec::new(),
            disclaimer: DISCLAIMER.to_owned(),
        }
    }

    /// A colour series: geometry, the sample range, the stored colour space.
    pub fn colour(path: &str, series: &pinhole_io::dicom::ColourSeries) -> Self {
        use pinhole_io::dicom::RgbSamples;
        let grid = series.volume.grid();
        let range = match series.volume.samples() {
            RgbSamples::U8(v) => min_max(v.iter().map(|&s| f64::from(s))),
            RgbSamples::U16(v) => min_max(v.iter().map(|&s| f64::from(s))),
            RgbSamples::U32(v) => min_max(v.iter().map(|&s| f64::from(s))),
        };
        let scalar_type = format!("rgb{}", series.volume.samples().bits());
        Self {
            format: pinhole_io::open::Format::DicomSeries.name().to_owned(),
            series_uid: Some(series.info.series_uid.clone()).filter(|uid| !uid.is_empty()),
            min: range.map(|r| r.0),
            max: range.map(|r| r.1),
            modality: Some(series.info.modality.clone()).filter(|m| !m.is_empty()),
            not_ct: Some(format!(
                "a colour picture ({}), not Hounsfield units",
                series.photometric
            )),
            colour: Some(series.photometric.clone()),
            warnings: series.warnings.clone(),
            ..Self::geometry(path, grid, &scalar_type)
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let f3 = |v: [f64; 3]| format!("{:.4} {:.4} {:.4}", v[0], v[1], v[2]);
        s += &format!("{} ({}, {})\n", self.path, self.format, self.scalar_type);
        if let Some(uid) = &self.series_uid {
            s += &format!("  series       {uid}\n");
        }
        if let Some(modality) = &self.modality {
            s += &format!("  modality     {modality}\n");
        }
        s += &format!(
            "  dims         {} x {} x {}\n",
            self.dims[0], self.dims[1], self.dims[2]
        );
        s += &format!("  spacing mm   {}\n", f3(self.spacing_mm));
        s += &format!("  origin LPS   {}\n", f3(self.origin_lps));
        s += &format!("  orientation  {}\n", self.orientation);
        for (r, row) in self.direction.iter().enumerate() {
            let label = if r == 0 {
                "  direction   "
            } else {
                "              "
            };
            s += &format!("{label} {}\n", f3(*row));
        }
        s += &format!(
            "  bounds LPS   {} .. {}\n",
            f3(self.bounds_lps[0]),
            f3(self.bounds_lps[1])
        );
        if let Some(colour) = &self.colour {
            s += &format!(
                "  colour       RGB (stored as {colour}); `pinhole convert` writes it as .nrrd\n"
            );
        }
        if let (Some(lo), Some(hi)) = (self.min, self.max) {
            let unit = match (&self.not_ct, self.is_label_map) {
                (_, true) => String::new(),
                (Some(reason), false) => format!(" (not CT-like: {reason})"),
                (None, false) => " (HU, CT-like)".to_owned(),
            };
            s += &format!("  values       {lo} .. {hi}{unit}\n");
        }
        if self.is_label_map {
            let table = self.label_table.as_deref().unwrap_or("none");
            s += &format!(
                "  labels       {} present (names: {table})\n",
                self.labels.len()
            );
            for l in &self.labels {
                let name = l.name.as_deref().unwrap_or("?");
                s += &format!(
                    "    {:>5}  {:<36} {:>10} voxels {:>10.2} mL\n",
                    l.id, name, l.voxels, l.ml
                );
            }
        }
        for w in &self.warnings {
            s += &format!("  warning: {w}\n");
        }
        s += &format!("{}\n", self.disclaimer);
        s
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |range, v| match range {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

fn label_rows(labels: &pinhole_volume::Volume<u16>, table: Option<&LabelTable>) -> Vec<LabelRow> {
    pinhole_volume::label_stats(labels)
        .into_values()
        .map(|s| LabelRow {
            id: s.id,
            name: table.and_then(|t| t.name(s.id)).map(str::to_string),
            voxels: s.voxels,
            ml: s.volume_ml,
            centroid_lps: s.centroid_lps,
        })
        .collect()
}

versioned_report!(VolumeReport, "volume-info", 1);

/// Reads `path` (a DICOM folder: series `series_uid`, default the largest) and describes
/// it; `labels_table` names the labels and marks the volume as a label map.
pub fn run(
    path: &Path,
    series_uid: Option<String>,
    labels_table: Option<&str>,
    observer: &dyn Observer,
) -> Result<VolumeReport> {
    let mut loaded = match load_image(path, series_uid, observer)? {
        Image::Grey(loaded) => loaded,
        Image::Colour(colour) => {
            if labels_table.is_some() {
                return Err(crate::error::Error::Invalid(format!(
                    "{}: a colour ({}) series is a picture, not a label map",
                    path.display(),
                    colour.photometric
                )));
            }
            return Ok(VolumeReport::colour(
                &crate::provenance::recorded_path(path),
                &colour,
            ));
        }
    };
    // A DICOM Segmentation names its own segments: they are its table unless one is given.
    let embedded = loaded.label_table.take().filter(|_| labels_table.is_none());
    let is_segmentation = embedded.is_some();
    let (table_name, table) = match embedded {
        Some(table) => (
            format!("segments of {}", crate::provenance::recorded_path(path)),
            table,
        ),
        None => label_table(labels_table)?,
    };
    Ok(VolumeReport::new(
        &crate::provenance::recorded_path(path),
        &loaded,
        Some((&table_name, &table)),
        labels_table.is_some() || is_segmentation,
    ))
}
