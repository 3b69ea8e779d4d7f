//! What the web viewer needs beyond guidance (docs/api.md): the volumes it loads (served
//! from memory under `/data/<name>`, so no file-system path is ever exposed), the label
//! table, plan lines and overlays merged into `/api/session`, and simulated fluoroscopy
//! rendered on request (`/api/drr`).

use std::collections::BTreeMap;
use std::sync::Arc;

use pinhole_volume::math::Vec3;
use pinhole_volume::Volume;
use pinhole_xray::display::{compose_with_organs, draw_line, fluoroscopy_gray, Window};
use pinhole_xray::{CArm, Detector, Image, Integrator, Projection};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Detector side of a viewer DRR is clamped to this range (pixels).
pub const DRR_SIZE_RANGE: (usize, usize) = (64, 1024);

/// A polyline the viewer draws (plan paths, vessel routes), LPS mm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    pub name: String,
    /// `plan` (the best path), `alternative`, or `route`.
    pub kind: String,
    pub points_lps: Vec<Vec3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length_mm: Option<f64>,
}

/// A volume drawn over the CT (an ablation zone, ...), served at `/data/<file>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OverlayVolume {
    pub name: String,
    pub url: String,
    pub opacity: f64,
}

/// A label shown in the legend and on hover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LabelColor {
    pub id: u32,
    pub name: String,
    pub color: [u8; 3],
}

/// Everything the viewer gets besides guidance.
#[derive(Default)]
pub struct Viewer {
    pub title: String,
    /// Files served at `/data/<name>` (exact names only).
    pub files: BTreeMap<String, (&'static str, Arc<[u8]>)>,
    pub labels: Vec<LabelColor>,
    pub lines: Vec<Line>,
    pub overlays: Vec<OverlayVolume>,
    pub drr: Option<DrrScene>,
}

/// A volume the viewer loads: its URL under `/data/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VolumeUrl {
    pub url: String,
}

/// The viewer's volumes (absent when not served).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ViewerVolumes {
    pub ct: Option<VolumeUrl>,
    pub labels: Option<VolumeUrl>,
}

/// Whether `/api/drr` renders, and with what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DrrAvailability {
    pub available: bool,
    pub renderer: Option<String>,
}

/// The viewer's part of `/api/session`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ViewerFields {
    pub title: String,
    pub volumes: ViewerVolumes,
    /// The labels present, with names and colours.
    pub labels_table: Vec<LabelColor>,
    pub lines: Vec<Line>,
    pub overlays: Vec<OverlayVolume>,
    pub drr: DrrAvailability,
}

impl Viewer {
    /// The fields merged into `/api/session`.
    pub fn session_fields(&self) -> ViewerFields {
        let url = |name: &str| {
            self.files.contains_key(name).then(|| VolumeUrl {
                url: format!("/data/{name}"),
            })
        };
        ViewerFields {
            title: self.title.clone(),
            volumes: ViewerVolumes {
                ct: url("ct.nii.gz"),
                labels: url("labels.nii.gz"),
            },
            labels_table: self.labels.clone(),
            lines: self.lines.clone(),
            overlays: self.overlays.clone(),
            drr: DrrAvailability {
                available: self.drr.is_some(),
                renderer: self.drr.as_ref().map(|d| d.renderer().to_owned()),
            },
        }
    }
}

/// Renders line integrals for a projection (the GPU renderer plugs in here; the server
/// itself stays free of GPU code).
pub trait LineIntegrals: Send + Sync {
    /// `cpu`, `gpu`, ... (reported in `x-pinhole-renderer`).
    fn name(&self) -> &str;
    fn render(&self, projection: &Projection) -> Result<Image, String>;
}

/// The CT as attenuation plus what a viewer DRR overlays: organs and lines.
pub struct DrrScene {
    pub mu: Volume<f32>,
    pub labels: Volume<u16>,
    pub organs: Vec<(u16, [u8; 3])>,
    pub lines: Vec<Line>,
    /// A faster renderer over the same `mu` (else the CPU's exact Siddon).
    pub accelerated: Option<Box<dyn LineIntegrals>>,
}

/// Why a DRR could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DrrError {
    #[error("C-arm geometry: {0}")]
    Geometry(String),
    #[error("PNG encoding: {0}")]
    Png(#[from] pinhole_io::Error),
    #[error("renderer: {0}")]
    Render(String),
}

impl DrrScene {
    /// The renderer used: `cpu` or the accelerated one's name.
    pub fn renderer(&self) -> &str {
        self.accelerated.as_ref().map_or("cpu", |r| r.name())
    }

    /// A `size`² PNG for the C-arm angles (LAO/CRAN positive), organs and lines overlaid.
    pub fn render_png(
        &self,
        lao_deg: f64,
        cran_deg: f64,
        size: usize,
    ) -> Result<Vec<u8>, DrrError> {
        let size = size.clamp(DRR_SIZE_RANGE.0, DRR_SIZE_RANGE.1);
        let mut carm = CArm::new(self.mu.grid().center_lps());
        carm.lao_deg = lao_deg;
        carm.cran_deg = cran_deg;
        let field_mm = carm.detector.width as f64 * carm.detector.pixel_mm;
        carm.detector = Detector {
            width: size,
            height: size,
            pixel_mm: field_mm / size as f64,
        };
        let projection = carm
            .projection()
            .map_err(|e| DrrError::Geometry(e.to_string()))?;
        let image = match &self.accelerated {
            Some(renderer) => renderer.render(&projection).map_err(DrrError::Render)?,
            None => pinhole_xray::render(&self.mu, &projection, Integrator::Siddon),
        };
        let gray = fluoroscopy_gray(&image, Window::from_percentiles(&image, 1.0, 99.0));
        let mut rgb = compose_with_organs(&gray, &self.labels, &self.organs, &projection);
        for line in &self.lines {
            let color = match line.kind.as_str() {
                "plan" => [255, 220, 0],
                "route" => [255, 80, 80],
                _ => [0, 200, 255],
            };
            for pair in line.points_lps.windows(2) {
                if let (Some(a), Some(b)) =
                    (projection.project(pair[0]), projection.project(pair[1]))
                {
                    draw_line(&mut rgb, size, size, a, b, color);
                }
            }
        }
        encode_png(size, &rgb)
    }
}

fn encode_png(size: usize, rgb: &[u8]) -> Result<Vec<u8>, DrrError> {
    let side = u32::try_from(size).unwrap_or(u32::MAX);
    Ok(pinhole_io::png::encode_rgb8("drr.png", side, side, rgb)?)
}
