//! Control CT in the live session (issue #21): the radiologist advances the needle, takes
//! a short control CT, and the server says where the needle really is against the plan.
//!
//! A control scan arrives as
//! * `POST /api/control-ct` ([`crate::http`]): the body is one NIfTI (`.nii`, or gzip
//!   `.nii.gz`, told apart by content) or NRRD file with attached data, at most
//!   `ServerConfig::control_ct_max_bytes` (413 beyond, refused from `Content-Length`
//!   before any byte is read); or
//! * an OpenIGTLink IMAGE whose device name is [`CONTROL_CT_DEVICE`] (`ControlCT`): a 3-D
//!   scalar image (at least 2 slices, one component, the whole volume) of HU in any
//!   integer or float scalar type; its IJK → world matrix honours the COORDINATE field
//!   (RAS, as 3D Slicer sends, or LPS) and is turned into an LPS grid at this edge. It is
//!   not relayed to other clients (a CT volume would stall their live streams); the
//!   sender gets a STATUS `ControlCT` saying it was accepted or why not.
//!
//! Either way the scan is decoded at once (unreadable: refused), checked to look like a
//! CT (`pinhole_pipeline::inputs::not_ct_reason`: refused otherwise), numbered (`seq`)
//! and queued for one worker thread, newest wins: a scan still waiting when a newer one
//! arrives is dropped. The worker registers it rigidly onto the planning CT
//! (`pinhole_pipeline::control_ct::register_loaded`) and, when that converged, finds the
//! needle and measures it against the session's plan line
//! (`pinhole_pipeline::verify::check_needle`, with the session's label map for what lies
//! ahead when the viewer scene names the labels). The outcome is kept as the latest
//! check ([`ControlCheck`], `GET /api/control-ct/latest`): `processing` from the moment
//! the scan is accepted, then `done` (the findings: a needle, or `found: false` with
//! `not_found_reason`) or `failed` (`error`; a registration that did not converge is
//! `failed` with its reason and its alignment, never a needle position). A check that
//! ends after a newer scan was accepted is logged, not published: `/latest` always
//! describes the newest scan.
//!
//! Refused before any decoding (HTTP 409, STATUS over OpenIGTLink): a server without a
//! planning CT (`ServerConfig::fusion_ct`, which `pinhole serve` always sets), and a
//! target-only session (no entry point): the needle check measures the needle against
//! the planned entry → target line, and without one its search direction, angle and
//! correction would be made up.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use pinhole_igtl::{Endian, ImageBody, ScalarType};
use pinhole_io::image::{AnyVolume, ScalarType as IoScalar};
use pinhole_io::raw::{decode_samples, Endian as RawEndian};
use pinhole_pipeline::control_ct::{register_loaded, ControlAlignment};
use pinhole_pipeline::observe::Observer;
use pinhole_pipeline::verify::{check_needle, NeedleFindings};
use pinhole_volume::math::Vec3;
use pinhole_volume::{Grid, Volume};

use crate::newest::NewestSlot;
use crate::{log, unix_now_s, Shared};

/// Device name of a control CT sent as an OpenIGTLink IMAGE.
pub const CONTROL_CT_DEVICE: &str = "ControlCT";

/// Default size limit of an uploaded control scan (512 MiB).
pub const DEFAULT_MAX_CONTROL_CT_BYTES: u64 = 512 << 20;

/// Where a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// Accepted, waiting for or in registration and needle detection.
    Processing,
    /// Registered; `findings` says whether and where the needle was found.
    Done,
    /// No needle position: the registration did not converge, or the check failed
    /// (`error` says why).
    Failed,
}

/// The latest control-scan check (`GET /api/control-ct/latest`). Positions are LPS mm in
/// the planning CT's frame.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControlCheck {
    /// Number of the scan (1, 2, … in order of acceptance).
    pub seq: u64,
    pub state: CheckState,
    /// Where the scan came from: `http <peer>` or `igtl client <id> <peer>`.
    pub source: String,
    /// Server clock (seconds since 1970) when the scan was accepted and when its check
    /// ended (`None` while processing).
    pub received_unix_s: f64,
    pub finished_unix_s: Option<f64>,
    /// The plan line the needle is measured against.
    pub plan_entry_lps: Vec3,
    pub plan_target_lps: Vec3,
    /// The control scan's grid.
    pub control_dims: [usize; 3],
    pub control_spacing_mm: [f64; 3],
    /// The control scan onto the planning scan (present once registered, converged or
    /// not).
    pub alignment: Option<ControlAlignment>,
    /// The needle (present when `done`).
    pub findings: Option<NeedleFindings>,
    /// Why the check `failed`.
    pub error: Option<String>,
    pub note: &'static str,
}

/// What every check says.
pub const NOTE: &str = "Not for clinical use. Check the detected needle on the control \
                        scan before acting on the correction.";

/// Why a control scan is not checked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlRefusal {
    #[error(
        "the server has no planning CT to register the control scan onto (start pinhole \
         serve with --ct)"
    )]
    NoPlanningCt,
    #[error(
        "this session has a target but no planned line (no entry point): the needle check \
         measures the needle against the plan's entry -> target line; start pinhole serve \
         with --plan plan.json"
    )]
    NoPlanLine,
    #[error("the control scan cannot be read: {0}")]
    Unreadable(String),
    #[error("the control scan is not a CT: {0}")]
    NotCt(String),
}

/// A scan waiting for the worker.
pub(crate) struct PendingScan {
    seq: u64,
    scan: Volume<f32>,
    entry_lps: Vec3,
    target_lps: Vec3,
}

/// At most one scan waiting, the newest.
pub(crate) type ScanQueue = NewestSlot<PendingScan>;

/// The session's plan line `(entry, target)`, or why there is none to check against.
pub fn plan_line(shared: &Shared) -> Result<(Vec3, Vec3), ControlRefusal> {
    if shared.config.fusion_ct.is_none() {
        return Err(ControlRefusal::NoPlanningCt);
    }
    let plan = shared.session.guidance.plan();
    match (plan.entry_lps, plan.direction()) {
        (Some(entry), Some(_)) => Ok((entry, plan.target_lps)),
        _ => Err(ControlRefusal::NoPlanLine),
    }
}

/// Decodes an uploaded file: NRRD when it starts with `NRRD`, else NIfTI (gzip or not),
/// then checks that it looks like a CT. Returns HU as f32.
pub fn read_upload(bytes: &[u8]) -> Result<Volume<f32>, ControlRefusal> {
    let volume = if bytes.starts_with(b"NRRD") {
        pinhole_io::nrrd::read_bytes(bytes)
            .map(|image| image.volume)
            .map_err(|e| ControlRefusal::Unreadable(format!("NRRD: {e}")))?
    } else {
        pinhole_io::nifti::read_bytes(bytes).map_err(|e| {
            ControlRefusal::Unreadable(format!("not a NRRD file, and as NIfTI: {e}"))
        })?
    };
    checked_ct(volume)
}

fn checked_ct(volume: AnyVolume) -> Result<Volume<f32>, ControlRefusal> {
    if let Some(reason) = pinhole_pipeline::inputs::not_ct_reason(&volume, None) {
        return Err(ControlRefusal::NotCt(reason));
    }
    Ok(match volume {
        AnyVolume::F32(v) => v,
        other => other.to_f32(),
    })
}

/// The control scan of an OpenIGTLink IMAGE (see the module doc), checked to look like a
/// CT.
pub fn volume_from_image(image: &ImageBody) -> Result<Volume<f32>, ControlRefusal> {
    let bad = |why: String| Err(ControlRefusal::Unreadable(format!("IMAGE: {why}")));
    if image.components != 1 {
        return bad(format!(
            "{} components per voxel; a CT has 1",
            image.components
        ));
    }
    if image.size[2] < 2 {
        return bad("a single slice; a control CT is a 3-D volume".into());
    }
    if image.subvolume_offset != [0; 3] || image.subvolume_size != image.size {
        return bad("a sub-volume; send the whole control scan".into());
    }
    let big = match image.endian {
        Endian::Big => true,
        Endian::Little => false,
        Endian::Other(e) => return bad(format!("unknown endian code {e}")),
    };
    let dims = image.size.map(usize::from);
    let grid = Grid::from_ijk_to_lps(dims, &image.ijk_to_lps())
        .map_err(|e| ControlRefusal::Unreadable(format!("IMAGE geometry: {e}")))?;
    let endian = if big {
        RawEndian::Big
    } else {
        RawEndian::Little
    };
    let volume = decode_samples(grid, &image.pixels, io_scalar(image.scalar_type), endian)
        .map_err(|e| ControlRefusal::Unreadable(format!("IMAGE pixels: {e}")))?;
    checked_ct(volume)
}

/// The OpenIGTLink scalar type as pinhole-io names it.
fn io_scalar(t: ScalarType) -> IoScalar {
    match t {
        ScalarType::I8 => IoScalar::I8,
        ScalarType::U8 => IoScalar::U8,
        ScalarType::I16 => IoScalar::I16,
        ScalarType::U16 => IoScalar::U16,
        ScalarType::I32 => IoScalar::I32,
        ScalarType::U32 => IoScalar::U32,
        ScalarType::F32 => IoScalar::F32,
        ScalarType::F64 => IoScalar::F64,
    }
}

impl Shared {
    /// Accepts a decoded control scan from `source`: publishes it as the latest check
    /// (`processing`) and queues it for the worker (newest wins). Refused when the
    /// session cannot check it ([`plan_line`]).
    pub fn submit_control_ct(
        &self,
        scan: Volume<f32>,
        source: String,
    ) -> Result<u64, ControlRefusal> {
        let (entry_lps, target_lps) = plan_line(self)?;
        let grid = scan.grid().clone();
        let mut accepted = 0;
        self.control_scans.put_with(|| {
            let seq = self.control_seq.fetch_add(1, Ordering::Relaxed) + 1;
            accepted = seq;
            self.set_control_check(ControlCheck {
                seq,
                state: CheckState::Processing,
                source,
                received_unix_s: unix_now_s(),
                finished_unix_s: None,
                plan_entry_lps: entry_lps,
                plan_target_lps: target_lps,
                control_dims: grid.dims(),
                control_spacing_mm: grid.spacing_mm(),
                alignment: None,
                findings: None,
                error: None,
                note: NOTE,
            });
            PendingScan {
                seq,
                scan,
                entry_lps,
                target_lps,
            }
        });
        Ok(accepted)
    }

    /// The latest control-scan check, if a scan was accepted.
    pub fn control_check(&self) -> Option<Arc<ControlCheck>> {
        match self.control_check.read() {
            Ok(c) => c.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// Publishes `check` unless a newer scan's check is already published.
    fn set_control_check(&self, check: ControlCheck) -> bool {
        let mut slot = match self.control_check.write() {
            Ok(c) => c,
            Err(e) => e.into_inner(),
        };
        if slot.as_ref().is_some_and(|c| c.seq > check.seq) {
            return false;
        }
        *slot = Some(Arc::new(check));
        true
    }
}

/// Starts the worker that checks control scans one at a time.
pub(crate) fn spawn_worker(
    queue: Arc<ScanQueue>,
    shared: Weak<Shared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pinhole-control-ct".into())
        .spawn(move || {
            while let Some(pending) = queue.next() {
                let Some(shared) = shared.upgrade() else {
                    break;
                };
                run_check(&shared, pending);
            }
        })
}

/// Warnings of the pipeline go to the server's log.
struct LogObserver;

impl Observer for LogObserver {
    fn warn(&self, message: &str) {
        log(format_args!("control CT: {message}"));
    }
}

fn run_check(shared: &Shared, pending: PendingScan) {
    let Some(previous) = shared.control_check().filter(|c| c.seq == pending.seq) else {
        return;
    };
    let mut check = (*previous).clone();
    check_scan(shared, &pending, &mut check);
    check.finished_unix_s = Some(unix_now_s());
    let summary = summary(&check);
    if shared.set_control_check(check) {
        log(format_args!("control CT #{}: {summary}", pending.seq));
    } else {
        log(format_args!(
            "control CT #{}: {summary} (not published: a newer scan arrived meanwhile)",
            pending.seq
        ));
    }
}

/// Registers the scan and, when that converged, checks the needle: fills `check`'s
/// state, alignment, findings or error.
fn check_scan(shared: &Shared, pending: &PendingScan, check: &mut ControlCheck) {
    check.state = CheckState::Failed;
    let Some(planning) = shared.config.fusion_ct.as_ref().map(|c| c.0.clone()) else {
        check.error = Some(ControlRefusal::NoPlanningCt.to_string());
        return;
    };
    let alignment = match register_loaded(&planning, &pending.scan, None, None, &LogObserver) {
        Ok(a) => a,
        Err(e) => {
            check.error = Some(format!("registration failed: {e}"));
            return;
        }
    };
    if !alignment.converged {
        let reason = alignment.reason.as_deref().unwrap_or("it did not converge");
        check.error = Some(format!(
            "registration failed: {reason}; the needle is not measured against the plan"
        ));
        check.alignment = Some(alignment);
        return;
    }
    let names = label_names(shared);
    let labels = names
        .as_ref()
        .map(|names| (shared.session.guidance.labels(), names));
    match check_needle(
        &planning,
        &pending.scan,
        (&alignment, None),
        (pending.entry_lps, pending.target_lps),
        labels,
        &LogObserver,
    ) {
        Ok(findings) => {
            check.state = CheckState::Done;
            check.findings = Some(findings);
        }
        Err(e) => check.error = Some(format!("needle check failed: {e}")),
    }
    check.alignment = Some(alignment);
}

/// Label names from the viewer scene (the session's label table), when it has them.
fn label_names(shared: &Shared) -> Option<BTreeMap<u32, String>> {
    let viewer = shared.session.viewer.as_ref()?;
    let names: BTreeMap<u32, String> = viewer
        .labels
        .iter()
        .filter(|l| l.id > 0)
        .map(|l| (l.id, l.name.clone()))
        .collect();
    (!names.is_empty()).then_some(names)
}

fn summary(check: &ControlCheck) -> String {
    match (&check.findings, &check.error) {
        (_, Some(error)) => format!("failed: {error}"),
        (Some(f), None) => match (&f.metrics, &f.not_found_reason) {
            (Some(m), _) => format!(
                "needle found, tip {:.1} mm from the target, {:.1} deg off the plan",
                m.tip_to_target_mm, m.angle_to_plan_deg
            ),
            (None, Some(reason)) => format!("no needle found: {reason}"),
            (None, None) => "no needle found".to_owned(),
        },
        (None, None) => "done".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_igtl::Coordinate;

    /// A RAS IMAGE (Slicer's way) becomes an LPS grid: x and y flipped on the world side.
    #[test]
    fn a_ras_image_becomes_an_lps_grid() {
        let size = [4u16, 3, 2];
        let n = 24;
        // i → RAS +x, 0.5 mm; j → RAS +y, 0.7 mm; k → +z, 2 mm.
        let m = [
            [0.5, 0.0, 0.0, 10.0],
            [0.0, 0.7, 0.0, 20.0],
            [0.0, 0.0, 2.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        // Half air, half water: looks like a CT.
        let pixels: Vec<u8> = (0..n)
            .flat_map(|o| (if o % 2 == 0 { -1000i16 } else { 40 }).to_be_bytes())
            .collect();
        let image = ImageBody::new(
            size,
            ScalarType::I16,
            1,
            Endian::Big,
            Coordinate::Ras,
            &m,
            pixels,
        );
        let v = volume_from_image(&image).unwrap();
        let g = v.grid();
        assert_eq!(g.dims(), [4, 3, 2]);
        for (a, b) in g.spacing_mm().iter().zip([0.5, 0.7, 2.0]) {
            assert!((a - b).abs() < 1e-6, "{:?}", g.spacing_mm());
        }
        // Voxel (1, 2, 1) is at RAS (10.5, 21.4, 32) = LPS (−10.5, −21.4, 32).
        let p = g.index_to_world([1.0, 2.0, 1.0]);
        for (a, b) in p.iter().zip([-10.5, -21.4, 32.0]) {
            assert!((a - b).abs() < 1e-4, "{p:?}");
        }
        assert_eq!(v.data()[0], -1000.0);
        assert_eq!(v.data()[1], 40.0);
    }

    #[test]
    fn a_single_slice_is_refused() {
        let image = ImageBody::new(
            [4, 4, 1],
            ScalarType::I16,
            1,
            Endian::Little,
            Coordinate::Ras,
            &pinhole_volume::math::IDENTITY4,
            vec![0; 32],
        );
        assert!(matches!(
            volume_from_image(&image),
            Err(ControlRefusal::Unreadable(_))
        ));
    }
}
