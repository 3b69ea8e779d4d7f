//! What the web viewer needs beyond guidance (docs/api.md): the volumes it loads (served
//! from memory under `/data/<name>`, so no file-system path is ever exposed), the label
//! table, plan lines and overlays merged into `/api/session`, and simulated fluoroscopy
//! rendered on request (`/api/drr`).

use std::collections::BTreeMap;
use std::sync::Arc;

use pinhole_volume::math::Vec3;
use pinhole_volume::Volume;
use pinhole_xray::coarse;
use pinhole_xray::display::{compose_rgb_upsampled, draw_line, fluoroscopy_gray, Overlay, Window};
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

/// How `/api/drr` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrrQuality {
    /// Exact Siddon through the full CT, organ path lengths at full detector resolution
    /// (the picture to keep; about a second for a 512² image of a chest CT on 2 cores).
    #[default]
    Full,
    /// Exact Siddon through a copy of the CT block-averaged to about
    /// [`PREVIEW_VOXEL_MM`] and cropped to the body, rays about
    /// [`PREVIEW_RAY_PITCH_MM`] apart at the isocentre (a third of the pixels a side at
    /// 512², upsampled; lines still drawn at full resolution), organ path lengths at half
    /// that: for dragging the C-arm sliders (about 35 ms for 512² of a chest CT on 2 cores).
    Preview,
}

/// Voxel side (mm) of the preview DRR's block-averaged CT.
pub const PREVIEW_VOXEL_MM: f64 = 1.5;

/// Preview rays are cast for blocks of pixels (upsampled after) whose pitch at the
/// isocentre stays within this (mm): 3 × 3 pixels at the default 512² (1.95 mm), single
/// pixels for small images whose pixels are already that large (so a structure a few mm
/// wide is never missed between rays); organ tints use blocks twice as large.
const PREVIEW_RAY_PITCH_MM: f64 = 2.0;

/// Pixels per preview ray block (a side) for `projection`, see [`PREVIEW_RAY_PITCH_MM`].
fn preview_pixel_block(projection: &Projection, magnification: f64) -> usize {
    let pitch_at_isocentre_mm = pinhole_volume::math::norm(projection.col_step) / magnification;
    ((PREVIEW_RAY_PITCH_MM / pitch_at_isocentre_mm).floor() as usize).max(1)
}

/// μ (1/mm) above which a voxel counts as body or table when the preview CT is cropped
/// (about −750 HU; the air around the patient is left out).
const PREVIEW_CONTENT_MU_PER_MM: f32 = 0.005;

/// An organ tinted on the DRR: its colour and its occupancy (fraction of each preview
/// voxel inside it, cropped to the organ), whose line integral is the path length.
struct TintedOrgan {
    color: [u8; 3],
    occupancy: Volume<f32>,
}

/// The CT as attenuation plus what a viewer DRR overlays: organs and lines.
pub struct DrrScene {
    mu: Volume<f32>,
    preview_mu: Volume<f32>,
    organs: Vec<TintedOrgan>,
    lines: Vec<Line>,
    /// A faster renderer over the same `mu` (else the CPU's exact Siddon).
    accelerated: Option<Box<dyn LineIntegrals>>,
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
    /// A newer request arrived while this one was being made.
    #[error("superseded by a newer request")]
    Superseded,
}

impl DrrScene {
    /// Prepares the scene: the preview CT (block-averaged, cropped to the body) and each
    /// organ's occupancy (`organs`: label id and colour; absent labels are skipped).
    pub fn new(
        mu: Volume<f32>,
        labels: &Volume<u16>,
        organs: &[(u16, [u8; 3])],
        lines: Vec<Line>,
        accelerated: Option<Box<dyn LineIntegrals>>,
    ) -> Self {
        let block = coarse::block_for_spacing(mu.grid().spacing_mm(), PREVIEW_VOXEL_MM);
        let preview_mu = coarse::block_mean_of_content(&mu, PREVIEW_CONTENT_MU_PER_MM, block)
            .unwrap_or_else(|| coarse::block_mean(&mu, block));
        let organs = organs
            .iter()
            .filter_map(|&(id, color)| {
                Some(TintedOrgan {
                    color,
                    occupancy: coarse::label_occupancy(labels, id, block)?,
                })
            })
            .collect();
        Self {
            mu,
            preview_mu,
            organs,
            lines,
            accelerated,
        }
    }

    /// The renderer used: `cpu` or the accelerated one's name.
    pub fn renderer(&self) -> &str {
        self.accelerated.as_ref().map_or("cpu", |r| r.name())
    }

    /// A `size`² PNG for the C-arm angles (LAO/CRAN positive), organs and lines overlaid.
    /// `superseded` is asked between stages; when it says yes the work stops with
    /// [`DrrError::Superseded`] (a newer slider position is waiting).
    pub fn render_png(
        &self,
        pose: DrrPose,
        quality: DrrQuality,
        superseded: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, DrrError> {
        let (projection, magnification) = viewer_projection(&self.mu, pose)?;
        let size = projection.width;
        let block = preview_pixel_block(&projection, magnification);
        let check = || {
            if superseded() {
                Err(DrrError::Superseded)
            } else {
                Ok(())
            }
        };
        let image = match (&self.accelerated, quality) {
            (Some(renderer), _) => renderer.render(&projection).map_err(DrrError::Render)?,
            (None, DrrQuality::Full) => {
                pinhole_xray::render(&self.mu, &projection, Integrator::Siddon)
            }
            (None, DrrQuality::Preview) => {
                let detector = coarse::coarse_projection(&projection, block);
                let coarse_image =
                    pinhole_xray::render(&self.preview_mu, &detector, Integrator::Siddon);
                coarse::upsample(&coarse_image, block, size, size)
            }
        };
        check()?;
        let gray = fluoroscopy_gray(&image, Window::from_percentiles(&image, 1.0, 99.0));
        let tint_block = match quality {
            DrrQuality::Full => 1,
            DrrQuality::Preview => 2 * block,
        };
        let mut rgb = self.tint_organs(&gray, &projection, tint_block);
        check()?;
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

    /// `gray` with each organ's path length tinted in its colour, computed on blocks of
    /// `factor` pixels a side and upsampled.
    fn tint_organs(&self, gray: &[u8], projection: &Projection, factor: usize) -> Vec<u8> {
        let detector = coarse::coarse_projection(projection, factor);
        let lengths: Vec<Image> = self
            .organs
            .iter()
            .map(|organ| pinhole_xray::render(&organ.occupancy, &detector, Integrator::Siddon))
            .collect();
        let overlays: Vec<Overlay> = lengths
            .iter()
            .zip(&self.organs)
            .map(|(lengths_mm, organ)| Overlay {
                lengths_mm,
                color_rgb: organ.color,
            })
            .collect();
        compose_rgb_upsampled(gray, &overlays, factor, projection.width, projection.height)
    }
}

/// A viewer DRR's C-arm angles (LAO and CRAN positive) and detector side in pixels
/// (clamped to [`DRR_SIZE_RANGE`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrrPose {
    pub lao_deg: f64,
    pub cran_deg: f64,
    pub size: usize,
}

/// The viewer's C-arm: isocentre at the CT's centre, the default detector's field of
/// view sampled by `size`² pixels; with its magnification (SID / SOD).
fn viewer_projection(mu: &Volume<f32>, pose: DrrPose) -> Result<(Projection, f64), DrrError> {
    let size = pose.size.clamp(DRR_SIZE_RANGE.0, DRR_SIZE_RANGE.1);
    let mut carm = CArm::new(mu.grid().center_lps());
    carm.lao_deg = pose.lao_deg;
    carm.cran_deg = pose.cran_deg;
    let field_mm = carm.detector.width as f64 * carm.detector.pixel_mm;
    carm.detector = Detector {
        width: size,
        height: size,
        pixel_mm: field_mm / size as f64,
    };
    let projection = carm
        .projection()
        .map_err(|e| DrrError::Geometry(e.to_string()))?;
    Ok((projection, carm.sid_mm / carm.sod_mm))
}

fn encode_png(size: usize, rgb: &[u8]) -> Result<Vec<u8>, DrrError> {
    let side = u32::try_from(size).unwrap_or(u32::MAX);
    Ok(pinhole_io::png::encode_rgb8_fast(
        "drr.png", side, side, rgb,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_volume::Grid;

    fn scene() -> DrrScene {
        let grid =
            Grid::axis_aligned([40, 40, 20], [1.0, 1.0, 2.0], [-20.0, -20.0, -20.0]).unwrap();
        let labels = Volume::new(
            grid.clone(),
            (0..grid.voxel_count())
                .map(|o| {
                    let [i, j, _] = grid.index_of_offset(o);
                    u16::from((25..32).contains(&i) && (10..30).contains(&j))
                })
                .collect(),
        )
        .unwrap();
        let mu = labels.map(|l| if l == 1 { 0.05f32 } else { 0.01 });
        DrrScene::new(
            mu,
            &labels,
            &[(1, [255, 0, 0]), (9, [0, 255, 0])],
            Vec::new(),
            None,
        )
    }

    /// Preview rays are 3 pixels apart at 512² (1.95 mm at the isocentre) and every pixel
    /// at 96² (3.5 mm pixels): never sparser than 2 mm.
    #[test]
    fn preview_rays_stay_within_two_millimetres() {
        let mu = Volume::filled(
            Grid::axis_aligned([4, 4, 4], [1.0; 3], [0.0; 3]).unwrap(),
            0.0,
        );
        for (size, expected) in [(512, 3), (256, 1), (96, 1), (1024, 6)] {
            let pose = DrrPose {
                lao_deg: 0.0,
                cran_deg: 0.0,
                size,
            };
            let (projection, magnification) = viewer_projection(&mu, pose).unwrap();
            assert_eq!(
                preview_pixel_block(&projection, magnification),
                expected,
                "{size}"
            );
        }
    }

    /// A request asked to stop (a newer slider position arrived) stops with `Superseded`
    /// and makes no picture; both qualities make one otherwise; absent organs are skipped.
    #[test]
    fn superseded_requests_stop_and_both_qualities_render() {
        let scene = scene();
        assert_eq!(scene.organs.len(), 1, "label 9 is absent");
        let pose = DrrPose {
            lao_deg: 10.0,
            cran_deg: 0.0,
            size: 96,
        };
        for quality in [DrrQuality::Full, DrrQuality::Preview] {
            let stopped = scene.render_png(pose, quality, &|| true);
            assert!(matches!(stopped, Err(DrrError::Superseded)), "{quality:?}");
            let png = scene.render_png(pose, quality, &|| false).unwrap();
            assert_eq!(&png[1..4], b"PNG");
        }
    }
}
