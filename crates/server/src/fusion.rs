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

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use pinhole_guidance::pose::{mat4_mul, Mat4};
use pinhole_igtl::{Body, ImageBody, Message, MetaEntry, ScalarType, Timestamp};
use pinhole_ultrasound::{ImagePlane, PlaneError};
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
}

/// The `ImageToLps` plane of an ultrasound IMAGE in the Reference frame:
/// `F · ReferenceToRAS · IJKToRAS` (F = diag(−1, −1, 1, 1)). Only the world side is
/// flipped: the pixel axes are not RAS or LPS, so the two-sided `F · M · F` used for
/// poses (`pose::flip_xy`) would mirror the image.
pub fn frame_plane(
    image: &ImageBody,
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
    let ijk_to_ras = image.ijk_to_ras();
    let ras = match reference_to_ras {
        Some(r) => mat4_mul(r, &ijk_to_ras),
        None => ijk_to_ras,
    };
    let mut lps = ras;
    for row in lps.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v + 0.0;
        }
    }
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
}

impl PendingFrame {
    pub(crate) fn new(
        seq: u64,
        from_client: u64,
        plane: ImagePlane,
        image: &ImageBody,
        ts: Timestamp,
    ) -> Self {
        let geometry = ImageBody {
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
        Self {
            seq,
            from_client,
            plane,
            geometry,
            timestamp: ts,
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
    let mut messages = Vec::with_capacity(2);
    if ct.is_some() {
        let mut body = frame.geometry.clone();
        body.pixels = fuser.ct_hu.iter().map(|&hu| window_u8(hu)).collect();
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
}

fn image_message(device: &str, body: ImageBody, ts: Timestamp) -> Message {
    let mut m = Message::new(device, Body::Image(body));
    m.timestamp = ts;
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_igtl::{Coordinate, Endian};

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
        let plane = frame_plane(&image([4, 3, 1], ScalarType::U8, &AXIAL_RAS), None).unwrap();
        // RAS (10, 20, 30) is LPS (−10, −20, 30); x and y flip.
        assert_eq!(plane.origin_lps(), [-10.0, -20.0, 30.0]);
        assert_eq!(plane.step_x_lps(), [-0.5, 0.0, 0.0]);
        assert_eq!(plane.step_y_lps(), [0.0, -0.5, 0.0]);
        // ReferenceToRAS: a 5 mm shift along R.
        let mut shift = pinhole_guidance::pose::IDENTITY4;
        shift[0][3] = 5.0;
        let plane =
            frame_plane(&image([4, 3, 1], ScalarType::U8, &AXIAL_RAS), Some(&shift)).unwrap();
        assert_eq!(plane.origin_lps(), [-15.0, -20.0, 30.0]);
    }

    #[test]
    fn bad_frames_are_refused_with_the_reason() {
        assert_eq!(
            frame_plane(&image([4, 3, 1], ScalarType::U16, &AXIAL_RAS), None),
            Err(FrameRefusal::Scalar(ScalarType::U16))
        );
        assert_eq!(
            frame_plane(&image([4, 3, 2], ScalarType::U8, &AXIAL_RAS), None),
            Err(FrameRefusal::Slices(2))
        );
        let mut zero = AXIAL_RAS;
        zero[1][1] = 0.0;
        assert!(matches!(
            frame_plane(&image([4, 3, 1], ScalarType::U8, &zero), None),
            Err(FrameRefusal::Plane(PlaneError::DegenerateAxis {
                axis: 'y',
                ..
            }))
        ));
        let mut sheared = AXIAL_RAS;
        sheared[0][1] = 0.1;
        assert!(matches!(
            frame_plane(&image([4, 3, 1], ScalarType::U8, &sheared), None),
            Err(FrameRefusal::Plane(PlaneError::Shear { .. }))
        ));
    }

    #[test]
    fn the_newest_frame_replaces_a_waiting_one() {
        let plane = frame_plane(&image([4, 3, 1], ScalarType::U8, &AXIAL_RAS), None).unwrap();
        let body = image([4, 3, 1], ScalarType::U8, &AXIAL_RAS);
        let queue = FrameQueue::default();
        for seq in 1..=3 {
            queue.put(PendingFrame::new(
                seq,
                1,
                plane.clone(),
                &body,
                Timestamp::default(),
            ));
        }
        assert_eq!(queue.next().map(|f| f.seq), Some(3));
        assert_eq!(queue.superseded(), 2);
        queue.close();
        assert!(queue.next().is_none());
    }
}
