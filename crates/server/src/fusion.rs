//! Live ultrasound: tracked IMAGE frames in, the CT and its labels resliced on each
//! frame's pixels out (issue #20).
//!
//! A frame is an OpenIGTLink IMAGE whose device name is `ServerConfig::us_device`
//! (default `Image_Reference`, as PLUS names an image expressed in the tracker Reference
//! frame): 8-bit unsigned, one component, one slice, the whole image (no sub-volume), and
//! an image plane [`ImagePlane`] accepts (finite, affine, non-degenerate and orthogonal
//! pixel steps). Its IJK→RAS matrix is in the Reference frame: the registration
//! (`ReferenceToRAS`) in force maps it to RAS, then RAS → LPS, as for needle poses (the
//! world side only: see [`frame_plane`]).
//! With a probe calibration (`ServerConfig::us_image_to_probe`, PLUS's `ImageToProbe`),
//! the IMAGE's own matrix is not used: the frame is placed by the latest TRANSFORM
//! `us_probe_device` (`ProbeToReference`, rigid, at most `us_plane_max_age` old) times
//! the calibration, and the fused images carry that `ImageToReference` as their matrix.
//! Other frames are refused with a reason (logged once per client, counted in
//! `us_frames_refused`); every IMAGE is still relayed to the other clients as before.
//!
//! The reader task only validates the frame and records its plane (the needle metrics use
//! the latest plane at once); fusion runs on one worker thread, newest wins like the pose
//! evaluator (`poses` module): a frame replaced by a newer one before its fusion starts
//! is skipped (`us_frames_superseded`). For each frame fused, the worker reslices the CT
//! (trilinear) and the labels (nearest) on the frame's pixel grid into buffers reused
//! across frames, and publishes to every OpenIGTLink client but the frame's sender
//! (newest wins, like guidance updates and the relayed images; a sender that never reads
//! would otherwise fill its socket with images and be dropped by `igtl_max_lag`: a
//! viewer that wants them connects on its own) two IMAGE messages with the frame's own geometry (the same size, T S N P and
//! COORDINATE field, so 3D Slicer overlays them on the ultrasound) and timestamp:
//!
//! * `CTReslice`: the CT in a soft-tissue window, 8-bit: width [`CT_WINDOW_WIDTH_HU`],
//!   level [`CT_WINDOW_LEVEL_HU`]; `round(255 · (HU − (L − W/2)) / W)` clamped to
//!   0–255 (−160 HU and below black, 240 HU and above white). Pixels outside the CT get
//!   −1000 HU (black). Not sent when the server has no CT.
//! * `LabelReslice`: the label ids, 8-bit, 0 = none; ids above 255 are clamped to 255
//!   (logged once).
//!
//! After publishing them, the worker builds the frame's two pictures for the web viewer
//! ([`UsView`], kept newest-wins in the server state; `/api/us/latest`,
//! `/api/us/frame.png`): `blend`, the incoming ultrasound grey mixed with `CTReslice`'s
//! grey at [`US_BLEND_CT_WEIGHT`], and `reslice`, `CTReslice`'s grey alone (black without
//! a CT); both with the contours of the labels in the viewer's label colours (none when
//! the session has no viewer scene), the contours of the viewer's overlays (ablation
//! zones, resliced nearest) in [`pinhole_ultrasound::compose::ZONE_COLOR`], the plan's
//! path projected on the plane and its target (`pinhole_ultrasound::compose`). Pixels
//! are shown as the frame has them (pixel x to the right, y down, as the scanner shows
//! them, never mirrored); the orientation letters name the patient direction each edge
//! faces.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use pinhole_guidance::pose::Mat4;
use pinhole_igtl::{Body, Coordinate, ImageBody, Message, MetaEntry, ScalarType, Timestamp};
use pinhole_ultrasound::compose::{self, LabelPalette, Overlay};
use pinhole_ultrasound::{ImagePlane, PlaneError};
use pinhole_volume::annotate::patient_letters;
use pinhole_volume::math::{Vec3, IDENTITY4};
use pinhole_volume::Volume;

use crate::newest::NewestSlot;
use crate::{log, Relay, Shared};

/// Device names of the fused images the server sends.
pub const CT_RESLICE_DEVICE: &str = "CTReslice";
pub const LABEL_RESLICE_DEVICE: &str = "LabelReslice";

/// Soft-tissue window of `CTReslice` (HU).
pub const CT_WINDOW_WIDTH_HU: f32 = 400.0;
pub const CT_WINDOW_LEVEL_HU: f32 = 40.0;

/// HU of `CTReslice` pixels outside the CT (air).
pub const OUTSIDE_HU: f32 = -1000.0;

/// Weight of the CT in the web viewer's blended ultrasound view (the ultrasound gets
/// the rest).
pub const US_BLEND_CT_WEIGHT: f32 = 0.5;

/// The CT the server reslices on ultrasound frames, shared; its `Debug` prints the grid
/// size only.
#[derive(Clone)]
pub struct FusionCt(pub Arc<Volume<f32>>);

impl std::fmt::Debug for FusionCt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FusionCt({:?} voxels)", self.0.grid().dims())
    }
}

/// Why an IMAGE of the ultrasound device is not used as a frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameRefusal {
    #[error("scalar type {0:?}: ultrasound frames must be 8-bit unsigned (U8)")]
    Scalar(ScalarType),
    #[error("{0} components per pixel: ultrasound frames must have 1")]
    Components(u8),
    #[error("{0} slices: ultrasound frames must be a single slice (size[2] = 1)")]
    Slices(u16),
    #[error("a sub-volume (offset {offset:?}, size {size:?}): ultrasound frames must be whole")]
    SubVolume { offset: [u16; 3], size: [u16; 3] },
    #[error("its image plane is refused: {0}")]
    Plane(#[from] PlaneError),
    #[error(
        "no {device} TRANSFORM received yet: with a probe calibration, frames are placed by \
         the tracked probe's pose"
    )]
    NoProbePose { device: String },
    #[error(
        "the latest {device} TRANSFORM is {age_ms} ms old (more than {max_age_ms} ms): \
         the probe is not tracked"
    )]
    ProbePoseTooOld {
        device: String,
        age_ms: u128,
        max_age_ms: u128,
    },
    #[error("{0}")]
    Tracking(pinhole_ultrasound::tracking::TrackingError),
}

/// The `ImageToLps` plane of an ultrasound IMAGE in the Reference frame:
/// `F · ReferenceToRAS · ImageToReference` (F = diag(−1, −1, 1, 1)), where
/// `ImageToReference` is `image_to_reference` when given (the tracked probe composed with
/// the calibration) and else the IMAGE's own IJK→RAS matrix. Only the world side is
/// flipped: the pixel axes are not RAS or LPS, so the two-sided `F · M · F` used for
/// poses (`pose::flip_xy`) would mirror the image.
pub fn frame_plane(
    image: &ImageBody,
    image_to_reference: Option<&Mat4>,
    reference_to_ras: Option<&Mat4>,
) -> Result<ImagePlane, FrameRefusal> {
    if image.scalar_type != ScalarType::U8 {
        return Err(FrameRefusal::Scalar(image.scalar_type));
    }
    if image.components != 1 {
        return Err(FrameRefusal::Components(image.components));
    }
    if image.size[2] != 1 {
        return Err(FrameRefusal::Slices(image.size[2]));
    }
    if image.subvolume_offset != [0; 3] || image.subvolume_size != image.size {
        return Err(FrameRefusal::SubVolume {
            offset: image.subvolume_offset,
            size: image.subvolume_size,
        });
    }
    let image_to_reference = image_to_reference
        .copied()
        .unwrap_or_else(|| image.ijk_to_ras());
    let lps = pinhole_ultrasound::tracking::image_to_lps(
        &image_to_reference,
        reference_to_ras.unwrap_or(&IDENTITY4),
    );
    Ok(ImagePlane::new(
        lps,
        usize::from(image.size[0]),
        usize::from(image.size[1]),
    )?)
}

/// The latest accepted frame's plane (for the needle metrics).
#[derive(Debug, Clone)]
pub(crate) struct LatestPlane {
    pub(crate) seq: u64,
    pub(crate) device: String,
    pub(crate) plane: ImagePlane,
    pub(crate) received: Instant,
}

/// A frame waiting for fusion: its plane and the geometry of the images to send back.
#[derive(Debug, Clone)]
pub(crate) struct PendingFrame {
    pub(crate) seq: u64,
    /// Client the frame came from (the fused images are not sent back to it).
    pub(crate) from_client: u64,
    pub(crate) plane: ImagePlane,
    /// The incoming image's header (pixels emptied): size, T S N P, COORDINATE, endian.
    pub(crate) geometry: ImageBody,
    pub(crate) timestamp: Timestamp,
    /// The incoming image's 8-bit pixels (row-major, `width × height`), for the viewer's
    /// blended picture.
    pub(crate) pixels: Vec<u8>,
    /// When the server accepted the frame.
    pub(crate) received: Instant,
}

impl PendingFrame {
    /// `placed`: the frame's `ImageToReference` when the tracked probe and the
    /// calibration placed it; the fused images then carry it as their matrix (so Slicer
    /// shows them where they are in the Reference frame), else the incoming image's own.
    pub(crate) fn new(
        seq: u64,
        from_client: u64,
        plane: ImagePlane,
        image: &ImageBody,
        ts: Timestamp,
        placed: Option<&Mat4>,
    ) -> Self {
        let mut geometry = ImageBody {
            version: image.version,
            components: 1,
            scalar_type: ScalarType::U8,
            endian: image.endian,
            coordinate: image.coordinate,
            size: image.size,
            axes: image.axes,
            centre: image.centre,
            subvolume_offset: [0; 3],
            subvolume_size: image.size,
            pixels: Vec::new(),
        };
        if let Some(image_to_reference) = placed {
            let placed_body = ImageBody::new(
                image.size,
                ScalarType::U8,
                1,
                image.endian,
                Coordinate::Ras,
                image_to_reference,
                Vec::new(),
            );
            geometry.coordinate = Coordinate::Ras;
            geometry.axes = placed_body.axes;
            geometry.centre = placed_body.centre;
        }
        Self {
            seq,
            from_client,
            plane,
            geometry,
            timestamp: ts,
            pixels: image.pixels.clone(),
            received: Instant::now(),
        }
    }
}

/// At most one frame waiting, the newest.
pub(crate) type FrameQueue = NewestSlot<PendingFrame>;

/// The worker's buffers, reused frame after frame.
#[derive(Default)]
pub(crate) struct Fuser {
    ct_hu: Vec<f32>,
    labels: Vec<u16>,
    /// Whether a label id above 255 was already reported.
    clamp_reported: bool,
    /// What the viewer's pictures draw (made at the first frame).
    view_assets: Option<ViewAssets>,
    /// The CT reslice windowed to grey (`CTReslice`'s pixels; black without a CT).
    ct_grey: Vec<u8>,
    zones: Vec<Vec<u16>>,
}

/// The patient direction each edge of a picture faces (orientation letters).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EdgeLetters {
    pub left: String,
    pub right: String,
    pub top: String,
    pub bottom: String,
}

impl EdgeLetters {
    /// Letters for a picture whose pixel steps right and down are `right_lps`, `down_lps`.
    pub fn of(right_lps: Vec3, down_lps: Vec3) -> Self {
        let neg = |v: Vec3| v.map(|c| -c);
        Self {
            left: patient_letters(neg(right_lps)),
            right: patient_letters(right_lps),
            top: patient_letters(neg(down_lps)),
            bottom: patient_letters(down_lps),
        }
    }
}

/// Which picture of a fused frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsViewKind {
    /// The ultrasound mixed with the CT reslice ([`US_BLEND_CT_WEIGHT`]), overlays on top.
    Blend,
    /// The CT reslice alone, the same overlays.
    Reslice,
}

/// The newest fused frame as RGB pictures for the web viewer (row-major on the frame's
/// pixels, `3 × width × height` bytes each), without letters or scale bar (drawn when a
/// PNG is encoded).
#[derive(Debug)]
pub struct UsView {
    pub seq: u64,
    pub width_px: usize,
    pub height_px: usize,
    /// Pixel spacing `[x, y]` (mm).
    pub spacing_mm: [f64; 2],
    /// LPS step of one pixel to the right and one pixel down (mm).
    pub right_lps: Vec3,
    pub down_lps: Vec3,
    pub letters: EdgeLetters,
    /// The incoming frame's OpenIGTLink timestamp (seconds since 1970).
    pub timestamp_s: f64,
    /// When the server accepted the frame.
    pub received: Instant,
    /// Time spent building both pictures (microseconds).
    pub build_us: u64,
    pub blend_rgb: Vec<u8>,
    pub reslice_rgb: Vec<u8>,
}

impl UsView {
    pub fn rgb(&self, kind: UsViewKind) -> &[u8] {
        match kind {
            UsViewKind::Blend => &self.blend_rgb,
            UsViewKind::Reslice => &self.reslice_rgb,
        }
    }
}

/// The session's part of the pictures: label colours, ablation zones, the plan.
struct ViewAssets {
    palette: LabelPalette,
    zones: Vec<Volume<u16>>,
    entry_lps: Option<Vec3>,
    target_lps: Vec3,
    target_radius_mm: f64,
}

impl ViewAssets {
    fn of(session: &pinhole_guidance::Session) -> Self {
        let plan = session.guidance.plan();
        let target_radius_mm = match &session.description.plan.target_zone {
            pinhole_guidance::session::TargetZoneInfo::Sphere { radius_mm, .. } => *radius_mm,
            pinhole_guidance::session::TargetZoneInfo::Label => {
                pinhole_guidance::engine::DEFAULT_TARGET_RADIUS_MM
            }
        };
        let (palette, zones) = match &session.viewer {
            Some(viewer) => (
                LabelPalette::new(viewer.labels.iter().map(|l| (l.id, l.color))),
                viewer
                    .overlays
                    .iter()
                    .filter_map(|o| {
                        let name = o.url.strip_prefix("/data/")?;
                        let (_, bytes) = viewer.files.get(name)?;
                        match pinhole_io::nifti::read_bytes(bytes) {
                            Ok(v) => Some(v.to_volume::<u16>()),
                            Err(e) => {
                                log(format_args!(
                                    "ultrasound view: overlay {name} not drawn ({e})"
                                ));
                                None
                            }
                        }
                    })
                    .collect(),
            ),
            None => (LabelPalette::default(), Vec::new()),
        };
        Self {
            palette,
            zones,
            entry_lps: plan.entry_lps,
            target_lps: plan.target_lps,
            target_radius_mm,
        }
    }
}

/// `CTReslice`'s window: HU → 8-bit grey (see the module documentation).
pub fn window_u8(hu: f32) -> u8 {
    let low = CT_WINDOW_LEVEL_HU - CT_WINDOW_WIDTH_HU / 2.0;
    let v = ((hu - low) / CT_WINDOW_WIDTH_HU * 255.0).round();
    // NaN (never produced by the reslice) maps to 0.
    v.clamp(0.0, 255.0) as u8
}

/// Label ids as 8 bits: ids above 255 become 255; returns how many did.
pub fn labels_u8(labels: &[u16], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut clamped = 0;
    out.extend(labels.iter().map(|&l| {
        if l > 255 {
            clamped += 1;
            255
        } else {
            l as u8
        }
    }));
    clamped
}

/// Starts the fusion worker; it holds the server state weakly and ends when the queue is
/// closed.
pub(crate) fn spawn_worker(
    queue: Arc<FrameQueue>,
    shared: Weak<Shared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pinhole-us-fusion".into())
        .spawn(move || {
            let mut fuser = Fuser::default();
            while let Some(frame) = queue.next() {
                let Some(shared) = shared.upgrade() else {
                    break;
                };
                fuse(&shared, &mut fuser, frame);
            }
        })
}

/// Reslices, encodes and publishes one frame.
pub(crate) fn fuse(shared: &Shared, fuser: &mut Fuser, frame: PendingFrame) {
    let started = Instant::now();
    let n = frame.plane.pixel_count();
    let labels = shared.session.guidance.labels();
    fuser.labels.resize(n, 0);
    let ct = shared.config.fusion_ct.as_ref().map(|c| c.0.clone());
    let resliced = match &ct {
        Some(ct) => {
            fuser.ct_hu.resize(n, OUTSIDE_HU);
            pinhole_ultrasound::reslice_both_into(
                ct,
                labels,
                &frame.plane,
                OUTSIDE_HU,
                &mut fuser.ct_hu,
                &mut fuser.labels,
            )
        }
        None => pinhole_ultrasound::reslice_labels_into(labels, &frame.plane, &mut fuser.labels),
    };
    if let Err(e) = resliced {
        log(format_args!(
            "ultrasound frame {}: cannot reslice: {e}",
            frame.seq
        ));
        return;
    }
    // The CT's grey, once per frame: `CTReslice` and the viewer's pictures share it.
    fuser.ct_grey.clear();
    if ct.is_some() {
        fuser
            .ct_grey
            .extend(fuser.ct_hu.iter().map(|&hu| window_u8(hu)));
    } else {
        fuser.ct_grey.resize(n, 0);
    }
    let mut messages = Vec::with_capacity(2);
    if ct.is_some() {
        let mut body = frame.geometry.clone();
        body.pixels.clone_from(&fuser.ct_grey);
        messages.push(image_message(CT_RESLICE_DEVICE, body, frame.timestamp));
    }
    let mut body = frame.geometry.clone();
    let clamped = labels_u8(&fuser.labels, &mut body.pixels);
    if clamped > 0 && !fuser.clamp_reported {
        fuser.clamp_reported = true;
        log(format_args!(
            "LabelReslice: {clamped} pixel(s) of ultrasound frame {} have label ids above 255, \
             sent as 255 (8-bit image; logged once)",
            frame.seq
        ));
    }
    messages.push(image_message(LABEL_RESLICE_DEVICE, body, frame.timestamp));
    let msg_id = (frame.seq & 0xFFFF_FFFF) as u32;
    let build = |v: u16| {
        let versioned: Vec<Message> = messages
            .iter()
            .map(|m| crate::igtl_server::versioned(m.clone(), v, msg_id, Vec::<MetaEntry>::new()))
            .collect();
        crate::igtl_server::encode_all(&versioned)
    };
    let (Some(frames_v1), Some(frames_v2)) = (build(1), build(2)) else {
        return;
    };
    shared.fused.send_replace(Some(Arc::new(Relay {
        seq: frame.seq,
        from_client: frame.from_client,
        frames_v1,
        frames_v2,
    })));
    let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let stats = &shared.stats;
    stats.us_frames_fused.fetch_add(1, Ordering::Relaxed);
    stats.us_fusion_last_us.store(took_us, Ordering::Relaxed);
    stats.us_fusion_max_us.fetch_max(took_us, Ordering::Relaxed);
    if !shared.us_view_wanted() {
        return;
    }
    match build_view(shared, fuser, &frame) {
        Ok(view) => shared.set_us_view(Arc::new(view)),
        Err(e) => log(format_args!(
            "ultrasound frame {}: no viewer picture: {e}",
            frame.seq
        )),
    }
}

/// The frame's two pictures (after `fuse` resliced it into `fuser`'s buffers).
fn build_view(shared: &Shared, fuser: &mut Fuser, frame: &PendingFrame) -> Result<UsView, String> {
    let started = Instant::now();
    let plane = &frame.plane;
    let (w, h) = (plane.width_px(), plane.height_px());
    let assets = fuser
        .view_assets
        .get_or_insert_with(|| ViewAssets::of(&shared.session));
    fuser.zones.resize_with(assets.zones.len(), Vec::new);
    for (zone, buffer) in assets.zones.iter().zip(&mut fuser.zones) {
        buffer.resize(w * h, 0);
        pinhole_ultrasound::reslice_labels_into(zone, plane, buffer).map_err(|e| e.to_string())?;
    }
    let zones: Vec<&[u16]> = fuser.zones.iter().map(Vec::as_slice).collect();
    let overlay = Overlay {
        labels: (!assets.palette.is_empty()).then_some((fuser.labels.as_slice(), &assets.palette)),
        zones: &zones,
        plan: Some(compose::plan_projection(
            plane,
            assets.entry_lps,
            assets.target_lps,
            assets.target_radius_mm,
        )),
        needle: needle_marks(shared, plane),
        line_width_px: (w.min(h) / 256).clamp(1, 3),
    };
    let (mut blend_rgb, mut reslice_rgb) = (Vec::new(), Vec::new());
    compose::blend(
        &frame.pixels,
        &fuser.ct_grey,
        w,
        h,
        US_BLEND_CT_WEIGHT,
        &overlay,
        &mut blend_rgb,
    )
    .map_err(|e| e.to_string())?;
    compose::reslice_view(&fuser.ct_grey, w, h, &overlay, &mut reslice_rgb)
        .map_err(|e| e.to_string())?;
    let (right_lps, down_lps) = (plane.step_x_lps(), plane.step_y_lps());
    Ok(UsView {
        seq: frame.seq,
        width_px: w,
        height_px: h,
        spacing_mm: plane.spacing_mm(),
        right_lps,
        down_lps,
        letters: EdgeLetters::of(right_lps, down_lps),
        timestamp_s: frame.timestamp.as_secs_f64(),
        received: frame.received,
        build_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        blend_rgb,
        reslice_rgb,
    })
}

/// The tracked needle against the frame's plane, from the newest guidance update (none
/// before a pose).
fn needle_marks(shared: &Shared, plane: &ImagePlane) -> Option<compose::NeedleMarks> {
    let update = shared.latest()?;
    let m = &update.metrics;
    let needle = pinhole_ultrasound::needle_in_plane(
        m.tip_lps,
        m.needle_axis_lps,
        plane,
        &shared.config.us_in_plane,
    )
    .ok()?;
    Some(compose::NeedleMarks::of(&needle))
}

/// A picture as PNG: the view's RGB with orientation letters at the edges and a scale
/// bar (`pinhole_volume::annotate`).
pub fn us_view_png(view: &UsView, kind: UsViewKind) -> Result<Vec<u8>, String> {
    let mut rgb = view.rgb(kind).to_vec();
    let mut canvas = pinhole_volume::annotate::Canvas {
        rgb: &mut rgb,
        width: view.width_px,
        height: view.height_px,
    };
    canvas.orientation_letters(view.right_lps, view.down_lps);
    canvas.scale_bar(view.spacing_mm[0]);
    let (w, h) = (
        u32::try_from(view.width_px).map_err(|e| e.to_string())?,
        u32::try_from(view.height_px).map_err(|e| e.to_string())?,
    );
    pinhole_io::png::encode_rgb8_fast("ultrasound view", w, h, &rgb).map_err(|e| e.to_string())
}

fn image_message(device: &str, body: ImageBody, ts: Timestamp) -> Message {
    let mut m = Message::new(device, Body::Image(body));
    m.timestamp = ts;
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_igtl::Endian;

    fn image(size: [u16; 3], scalar: ScalarType, m: &Mat4) -> ImageBody {
        let n = usize::from(size[0]) * usize::from(size[1]) * usize::from(size[2]);
        ImageBody::new(
            size,
            scalar,
            1,
            Endian::Big,
            Coordinate::Ras,
            m,
            vec![0; n * scalar.size()],
        )
    }

    const AXIAL_RAS: Mat4 = [
        [0.5, 0.0, 0.0, 10.0],
        [0.0, 0.5, 0.0, 20.0],
        [0.0, 0.0, 1.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];

    #[test]
    fn the_window_maps_level_and_edges() {
        assert_eq!(window_u8(-1000.0), 0);
        assert_eq!(window_u8(-160.0), 0);
        assert_eq!(window_u8(240.0), 255);
        assert_eq!(window_u8(3000.0), 255);
        // Level 40 HU: 127.5 rounds away from zero.
        assert_eq!(window_u8(40.0), 128);
        assert_eq!(window_u8(f32::NAN), 0);
    }

    #[test]
    fn labels_above_255_are_clamped_and_counted() {
        let mut out = Vec::new();
        assert_eq!(labels_u8(&[0, 52, 255, 256, 1000], &mut out), 2);
        assert_eq!(out, vec![0, 52, 255, 255, 255]);
    }

    #[test]
    fn a_ras_frame_becomes_an_lps_plane_through_the_registration() {
        let plane = frame_plane(&image([4, 3, 1], ScalarType::U8, &AXIAL_RAS), None, None).unwrap();
        // RAS (10, 20, 30) is LPS (−10, −20, 30); x and y flip.
        assert_eq!(plane.origin_lps(), [-10.0, -20.0, 30.0]);
        assert_eq!(plane.step_x_lps(), [-0.5, 0.0, 0.0]);
        assert_eq!(plane.step_y_lps(), [0.0, -0.5, 0.0]);
        // ReferenceToRAS: a 5 mm shift along R.
        let mut shift = pinhole_guidance::pose::IDENTITY4;
        shift[0][3] = 5.0;
        let plane = frame_plane(
            &image([4, 3, 1], ScalarType::U8, &AXIAL_RAS),
            None,
            Some(&shift),
        )
        .unwrap();
        assert_eq!(plane.origin_lps(), [-15.0, -20.0, 30.0]);
        // A tracked probe's placement replaces the IMAGE's own matrix.
        let mut placed = AXIAL_RAS;
        placed[2][3] = -7.0;
        let plane = frame_plane(
            &image([4, 3, 1], ScalarType::U8, &AXIAL_RAS),
            Some(&placed),
            Some(&shift),
        )
        .unwrap();
        assert_eq!(plane.origin_lps(), [-15.0, -20.0, -7.0]);
    }

    #[test]
    fn bad_frames_are_refused_with_the_reason() {
        assert_eq!(
            frame_plane(&image([4, 3, 1], ScalarType::U16, &AXIAL_RAS), None, None),
            Err(FrameRefusal::Scalar(ScalarType::U16))
        );
        assert_eq!(
            frame_plane(&image([4, 3, 2], ScalarType::U8, &AXIAL_RAS), None, None),
            Err(FrameRefusal::Slices(2))
        );
        let mut zero = AXIAL_RAS;
        zero[1][1] = 0.0;
        assert!(matches!(
            frame_plane(&image([4, 3, 1], ScalarType::U8, &zero), None, None),
            Err(FrameRefusal::Plane(PlaneError::DegenerateAxis {
                axis: 'y',
                ..
            }))
        ));
        let mut sheared = AXIAL_RAS;
        sheared[0][1] = 0.1;
        assert!(matches!(
            frame_plane(&image([4, 3, 1], ScalarType::U8, &sheared), None, None),
            Err(FrameRefusal::Plane(PlaneError::Shear { .. }))
        ));
    }

    #[test]
    fn the_newest_frame_replaces_a_waiting_one() {
        let plane = frame_plane(&image([4, 3, 1], ScalarType::U8, &AXIAL_RAS), None, None).unwrap();
        let body = image([4, 3, 1], ScalarType::U8, &AXIAL_RAS);
        let queue = FrameQueue::default();
        for seq in 1..=3 {
            queue.put(PendingFrame::new(
                seq,
                1,
                plane.clone(),
                &body,
                Timestamp::default(),
                None,
            ));
        }
        assert_eq!(queue.next().map(|f| f.seq), Some(3));
        assert_eq!(queue.superseded(), 2);
        queue.close();
        assert!(queue.next().is_none());
    }
}
