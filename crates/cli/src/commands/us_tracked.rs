//! `pinhole us reconstruct`: a tracked sweep (PLUS / Slicer sequence file) compounded into
//! a volume (`pinhole_ultrasound::reconstruct`, pixel nearest neighbour + hole filling, as
//! PLUS's VolumeReconstructor). `pinhole us landmarks`: a rigid correction of the fusion
//! from landmark pairs (`pinhole_ultrasound::landmarks`), written as the corrected
//! registration `serve --registration` reads. `pinhole us register`: the same correction
//! found automatically from a tracked sweep and the CT (`pinhole_ultrasound::register`,
//! LC²). Not for clinical use.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use pinhole_io::image::AnyVolume;
use pinhole_io::sequence::{FramePixels, TrackedSequence};
use pinhole_pipeline::Observer;
use pinhole_ultrasound::landmarks::{corrected_registration, fit_rigid};
use pinhole_ultrasound::tracking::{self, Placement};
use pinhole_ultrasound::{reconstruct, sweep_grid, ImagePlane, ReconstructOptions};
use pinhole_volume::math::{Mat4, IDENTITY4};
use serde_json::json;

#[derive(Args)]
pub struct ReconstructArgs {
    /// Tracked sequence (`.seq.mha`, `.igs.mha`, `.mhd`, `.seq.nrrd`), 8-bit frames.
    sequence: PathBuf,
    /// Output volume: `.nrrd`, `.nii` or `.nii.gz` (8-bit, LPS grid, 0 = not swept).
    #[arg(long)]
    out: PathBuf,
    /// Also write which voxels were hit (1), filled (2) or left empty (0).
    #[arg(long)]
    state_out: Option<PathBuf>,
    /// Voxel size of the output grid (mm).
    #[arg(long, value_parser = super::finite, default_value_t = 0.5)]
    spacing_mm: f64,
    /// Leave voxels no pixel fell into empty instead of filling them from hit neighbours.
    #[arg(long)]
    no_fill: bool,
    /// Hole filling: half-size of the cube of hit neighbours averaged (voxels).
    #[arg(long, default_value_t = 2)]
    fill_radius: usize,
    /// Probe calibration ImageToProbe (PLUS device-set XML or 4x4 / ITK file) for frames
    /// that carry ProbeToReference but no ImageToProbe.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Tracker registration ReferenceToRAS (ITK .tfm or 4x4 text); default identity
    /// (the sequence's Reference is RAS).
    #[arg(long)]
    registration: Option<PathBuf>,
}

#[derive(Args)]
pub struct RegisterArgs {
    /// Tracked sweep (`.seq.mha`, `.igs.mha`, `.mhd`, `.seq.nrrd`), 8-bit frames, over the
    /// CT's anatomy.
    sequence: PathBuf,
    /// The CT (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// The registration in force (ReferenceToRAS; ITK .tfm or 4x4 text); default
    /// identity.
    #[arg(long)]
    registration: Option<PathBuf>,
    /// Probe calibration ImageToProbe for frames that carry ProbeToReference but no
    /// ImageToProbe.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Corrected registration (4x4 text, ReferenceToRAS) for `serve --registration`.
    #[arg(long)]
    out: PathBuf,
    /// Use the CT even if it does not look like one (reported as a warning).
    #[arg(long)]
    allow_non_ct: bool,
}

#[derive(Args)]
pub struct LandmarksArgs {
    /// Points as the tracked ultrasound shows them (Slicer `.mrk.json`, LPS or RAS as the
    /// file says), placed through the registration given.
    #[arg(long)]
    us_points: PathBuf,
    /// The same structures' points on the CT (`.mrk.json`), in the same order or with the
    /// same labels.
    #[arg(long)]
    ct_points: PathBuf,
    /// The registration in force (ReferenceToRAS; ITK .tfm or 4x4 text); default
    /// identity.
    #[arg(long)]
    registration: Option<PathBuf>,
    /// Corrected registration (4x4 text, ReferenceToRAS) for `serve --registration`.
    #[arg(long)]
    out: PathBuf,
}

/// Frames listed by index in a warning before the rest are only counted.
const LISTED_FRAMES: usize = 10;

pub fn reconstruct_sweep(args: &ReconstructArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let options = ReconstructOptions {
        spacing_mm: args.spacing_mm,
        fill_holes: !args.no_fill,
        hole_fill_radius_vox: args.fill_radius,
        ..ReconstructOptions::default()
    };
    options.validate()?;
    pinhole_io::open::output_format(&args.out)?;
    if let Some(state) = &args.state_out {
        pinhole_io::open::output_format(state)?;
    }
    let outputs: Vec<PathBuf> = std::iter::once(args.out.clone())
        .chain(args.state_out.clone())
        .collect();
    super::refuse_overwriting_inputs(
        &[
            Some(args.sequence.as_path()),
            args.calibration.as_deref(),
            args.registration.as_deref(),
        ],
        &outputs,
    )?;
    let PlacedSweep {
        sequence,
        planes,
        pixels,
        placed,
        warnings,
        ..
    } = load_placed_sweep(
        &args.sequence,
        args.registration.as_deref(),
        args.calibration.as_deref(),
    )?;
    let mask = field_of_view(&pixels, sequence.width * sequence.height);
    let grid = sweep_grid(&planes, options.spacing_mm, options.max_voxels)?;
    terminal.begin("compounding the sweep");
    let frames = planes.iter().zip(pixels.iter().map(|p| p.as_slice()));
    let result = reconstruct(frames, &grid, Some(&mask), &options)?;
    terminal.end();
    pinhole_io::open::write_volume(&args.out, &AnyVolume::U8(result.volume.clone()))?;
    eprintln!("wrote {}", args.out.display());
    if let Some(state) = &args.state_out {
        pinhole_io::open::write_volume(state, &AnyVolume::U8(result.state.clone()))?;
        eprintln!("wrote {}", state.display());
    }
    let outside_fov = mask.iter().filter(|&&m| !m).count();
    let report = json!({
        "note": pinhole_pipeline::report::DISCLAIMER,
        "sequence": args.sequence.file_name().map(|n| n.to_string_lossy().to_string()),
        "frames": sequence.frames.len(),
        "frames_used": planes.len(),
        "placed_by": placed,
        "grid_dims": grid.dims(),
        "spacing_mm": options.spacing_mm,
        "voxels_hit": result.voxels_hit,
        "voxels_filled": result.voxels_filled,
        "voxels_empty": result.voxels_empty,
        "pixels_compounded": result.pixels_compounded,
        "pixels_outside_grid": result.pixels_outside,
        "pixels_outside_field_of_view": outside_fov,
        "warnings": warnings,
    });
    print_summary(&report, &warnings, terminal)
}

/// A tracked sweep read and placed: the usable frames' LPS planes and pixels.
struct PlacedSweep {
    sequence: TrackedSequence,
    planes: Vec<ImagePlane>,
    pixels: Vec<Vec<u8>>,
    /// How many frames each way placed (JSON for the summary).
    placed: serde_json::Value,
    /// The reader's and the placement's warnings.
    warnings: Vec<String>,
    /// The registration in force (`ReferenceToRAS`, identity when none was given).
    registration: Mat4,
}

/// Reads a sequence, the registration and the calibration (when given), and places the
/// frames ([`place_frames`]).
fn load_placed_sweep(
    sequence_path: &std::path::Path,
    registration_path: Option<&std::path::Path>,
    calibration_path: Option<&std::path::Path>,
) -> anyhow::Result<PlacedSweep> {
    let registration = match registration_path {
        Some(p) => pinhole_io::transform::read_registration(p)?,
        None => IDENTITY4,
    };
    let calibration = match calibration_path {
        Some(p) => Some(pinhole_io::calibration::read_calibration(p)?.image_to_probe),
        None => None,
    };
    let sequence = pinhole_io::sequence::read_sequence(sequence_path)?;
    let mut warnings = sequence.warnings.clone();
    let (planes, pixels, placed) =
        place_frames(&sequence, calibration, &registration, &mut warnings)?;
    Ok(PlacedSweep {
        sequence,
        planes,
        pixels,
        placed,
        warnings,
        registration,
    })
}

/// Each usable frame's LPS plane and 8-bit pixels, and how many frames each way placed;
/// unusable frames become one warning.
fn place_frames(
    sequence: &TrackedSequence,
    calibration: Option<Mat4>,
    registration: &Mat4,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Vec<ImagePlane>, Vec<Vec<u8>>, serde_json::Value)> {
    let (width, height) = (sequence.width, sequence.height);
    let mut planes = Vec::new();
    let mut pixels = Vec::new();
    let mut skipped: Vec<(usize, String)> = Vec::new();
    let (mut direct, mut composed) = (0usize, 0usize);
    for (k, frame) in sequence.frames.iter().enumerate() {
        let FramePixels::U8(values) = &frame.pixels else {
            bail!(
                "{}: 16-bit frames; reconstruction compounds 8-bit B-mode frames",
                sequence_kind(sequence)
            );
        };
        let lookup = |name: &str| match (name, calibration) {
            ("ImageToProbe", Some(c)) if frame.transform(name).is_none() => Ok(c),
            _ => frame.valid_transform(name).copied(),
        };
        match tracking::place_frame(lookup, width, height) {
            Ok((image_to_reference, how)) => {
                let lps = tracking::image_to_lps(&image_to_reference, registration);
                planes.push(ImagePlane::new(lps, width, height)?);
                pixels.push(values.clone());
                match how {
                    Placement::ImageToReference => direct += 1,
                    Placement::ProbeToReferenceTimesImageToProbe => composed += 1,
                }
            }
            Err(why) => skipped.push((k, why)),
        }
    }
    if planes.is_empty() {
        let first = skipped
            .first()
            .map(|(_, w)| w.as_str())
            .unwrap_or("no frames");
        bail!(
            "none of the sequence's {} frame(s) can be placed: {first}",
            sequence.frames.len()
        );
    }
    if !skipped.is_empty() {
        let listed: Vec<String> = skipped
            .iter()
            .take(LISTED_FRAMES)
            .map(|(k, why)| format!("{k} ({why})"))
            .collect();
        warnings.push(format!(
            "{} of {} frame(s) not used, they cannot be placed: {}{}",
            skipped.len(),
            sequence.frames.len(),
            listed.join(", "),
            if skipped.len() > LISTED_FRAMES {
                ", …"
            } else {
                ""
            }
        ));
    }
    let placed = json!({ "image_to_reference": direct, "probe_to_reference_times_image_to_probe": composed });
    Ok((planes, pixels, placed))
}

fn sequence_kind(sequence: &TrackedSequence) -> String {
    format!("{} × {} sequence", sequence.width, sequence.height)
}

/// The probe's field of view: pixels that are not 0 in at least one frame. A pixel that is
/// 0 in every frame lies outside the scanned fan or rectangle (no echo was ever written
/// there) and is not compounded, so the fan's edges do not darken the volume.
fn field_of_view(frames: &[Vec<u8>], pixel_count: usize) -> Vec<bool> {
    let mut mask = vec![false; pixel_count];
    for frame in frames {
        for (m, &v) in mask.iter_mut().zip(frame) {
            *m |= v != 0;
        }
    }
    mask
}

/// Largest correction accepted without a warning: the search covers ±10 mm / ±10°.
const REGISTER_WARN_SHIFT_MM: f64 = 10.0;
const REGISTER_WARN_ROTATION_DEG: f64 = 10.0;

pub fn register_sweep(args: &RegisterArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    super::refuse_overwriting_inputs(
        &[
            Some(args.sequence.as_path()),
            Some(args.ct.as_path()),
            args.registration.as_deref(),
            args.calibration.as_deref(),
        ],
        std::slice::from_ref(&args.out),
    )?;
    let PlacedSweep {
        sequence,
        planes,
        pixels,
        placed,
        mut warnings,
        registration,
    } = load_placed_sweep(
        &args.sequence,
        args.registration.as_deref(),
        args.calibration.as_deref(),
    )?;
    let (ct, not_ct) = pinhole_pipeline::inputs::load_checked_ct(
        &args.ct,
        super::not_ct_policy(args.allow_non_ct),
        terminal,
    )?;
    warnings.extend(not_ct);
    let frames: Vec<(ImagePlane, &[u8])> = planes
        .iter()
        .cloned()
        .zip(pixels.iter().map(Vec::as_slice))
        .collect();
    terminal.begin("registering the sweep to the CT (LC²)");
    let started = std::time::Instant::now();
    let found = pinhole_ultrasound::register::register_sweep(
        &ct,
        &frames,
        &pinhole_ultrasound::register::UsRegisterOptions::default(),
    )?;
    terminal.end();
    if !found.converged {
        warnings.push(
            "the optimiser stopped on its evaluation budget, not on its tolerance: check the \
             result against landmarks"
                .to_owned(),
        );
    }
    if found.shift_at_centre_mm > REGISTER_WARN_SHIFT_MM
        || found.rotation_deg > REGISTER_WARN_ROTATION_DEG
    {
        warnings.push(format!(
            "the correction ({:.1} mm, {:.1}°) is at the edge of the search (±10 mm, ±10°): \
             the tracking may be off by more than the method can correct",
            found.shift_at_centre_mm, found.rotation_deg
        ));
    }
    let corrected = pinhole_ultrasound::landmarks::registration_corrected_by(
        &found.correction_lps,
        &registration,
    );
    pinhole_io::transform::write_registration(
        &args.out,
        &corrected,
        "ReferenceToRAS corrected by `pinhole us register` (rigid, LC² on a tracked sweep). \
         Not for clinical use.",
    )?;
    eprintln!("wrote {}", args.out.display());
    let report = json!({
        "note": pinhole_pipeline::report::DISCLAIMER,
        "frames": sequence.frames.len(),
        "frames_placed": planes.len(),
        "placed_by": placed,
        "registration": found,
        "reference_to_ras": corrected,
        "seconds": started.elapsed().as_secs_f64(),
        "caution": "Validated on simulated sweeps only (docs/ultrasound.md): check the result against landmarks.",
        "warnings": warnings,
    });
    print_summary(&report, &warnings, terminal)
}

pub fn landmarks(args: &LandmarksArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    super::refuse_overwriting_inputs(
        &[
            Some(args.us_points.as_path()),
            Some(args.ct_points.as_path()),
            args.registration.as_deref(),
        ],
        std::slice::from_ref(&args.out),
    )?;
    let registration = match &args.registration {
        Some(p) => pinhole_io::transform::read_registration(p)?,
        None => IDENTITY4,
    };
    let us = control_points(&args.us_points)?;
    let ct = control_points(&args.ct_points)?;
    let (labels, us_lps, ct_lps) = pair_points(&us, &ct)?;
    let fit = fit_rigid(&us_lps, &ct_lps)?;
    let corrected = corrected_registration(&fit, &registration);
    pinhole_io::transform::write_registration(
        &args.out,
        &corrected,
        "ReferenceToRAS corrected by `pinhole us landmarks` (rigid, Horn 1987). Not for clinical use.",
    )?;
    eprintln!("wrote {}", args.out.display());
    let mut warnings = Vec::new();
    if fit.fre_rms_mm > 2.0 {
        warnings.push(format!(
            "fiducial registration error {:.2} mm RMS: the pairs disagree by more than 2 mm \
             (a wrong pair, or motion a rigid correction cannot remove); check the residuals",
            fit.fre_rms_mm
        ));
    }
    let residuals: Vec<_> = labels
        .iter()
        .zip(&fit.residuals_mm)
        .map(|(l, r)| json!({ "label": l, "residual_mm": r }))
        .collect();
    let report = json!({
        "note": pinhole_pipeline::report::DISCLAIMER,
        "pairs": labels.len(),
        "rotation_deg": fit.rotation_deg,
        "shift_at_centroid_mm": fit.shift_at_centroid_mm,
        "fre_rms_mm": fit.fre_rms_mm,
        "residuals": residuals,
        "us_to_ct_lps": fit.us_to_ct_lps,
        "reference_to_ras": corrected,
        "caution": "FRE measures the landmarks' agreement after the fit, not the error at the target (TRE).",
        "warnings": warnings,
    });
    print_summary(&report, &warnings, terminal)
}

/// Every control point of a markups file (all its nodes), label and LPS position.
fn control_points(path: &std::path::Path) -> anyhow::Result<Vec<(String, [f64; 3])>> {
    let markups = pinhole_io::markups::read_markups(path)?;
    let points: Vec<(String, [f64; 3])> = markups
        .iter()
        .flat_map(|m| m.points.iter().map(|p| (p.label.clone(), p.position_lps)))
        .collect();
    if points.is_empty() {
        bail!("{}: no control points", path.display());
    }
    Ok(points)
}

/// Pairs by label when both files have the same set of distinct labels, else by order
/// (equal counts required).
#[allow(clippy::type_complexity)]
fn pair_points(
    us: &[(String, [f64; 3])],
    ct: &[(String, [f64; 3])],
) -> anyhow::Result<(Vec<String>, Vec<[f64; 3]>, Vec<[f64; 3]>)> {
    fn distinct(p: &[(String, [f64; 3])]) -> Option<Vec<&str>> {
        let mut l: Vec<&str> = p.iter().map(|(l, _)| l.as_str()).collect();
        l.sort_unstable();
        let n = l.len();
        l.dedup();
        (l.len() == n && l.iter().all(|s| !s.is_empty())).then_some(l)
    }
    if let (Some(a), Some(b)) = (distinct(us), distinct(ct)) {
        if a == b {
            let ct_of = |label: &str| ct.iter().find(|(l, _)| l == label).map(|(_, p)| *p);
            let mut labels = Vec::new();
            let (mut u, mut c) = (Vec::new(), Vec::new());
            for (label, p) in us {
                let q = ct_of(label).context("label vanished")?;
                labels.push(label.clone());
                u.push(*p);
                c.push(q);
            }
            return Ok((labels, u, c));
        }
    }
    if us.len() != ct.len() {
        bail!(
            "{} ultrasound point(s) but {} CT point(s), and their labels do not match one to one",
            us.len(),
            ct.len()
        );
    }
    let labels = us
        .iter()
        .enumerate()
        .map(|(i, (l, _))| {
            if l.is_empty() {
                format!("#{}", i + 1)
            } else {
                l.clone()
            }
        })
        .collect();
    Ok((
        labels,
        us.iter().map(|(_, p)| *p).collect(),
        ct.iter().map(|(_, p)| *p).collect(),
    ))
}

/// The command's JSON summary on stdout, its warnings on the terminal, the disclaimer.
fn print_summary(
    report: &serde_json::Value,
    warnings: &[String],
    terminal: &dyn Observer,
) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    for w in warnings {
        terminal.warn(w);
    }
    println!("{}", pinhole_pipeline::report::DISCLAIMER);
    Ok(())
}
