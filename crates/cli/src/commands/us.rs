//! `pinhole us simulate`: a B-mode ultrasound frame simulated from a CT for a probe pose
//! (`pinhole_ultrasound::simulate`), written as an 8-bit PNG and a JSON sidecar with
//! its `ImageToLps`. `pinhole us sweep`: a sweep of such frames around the pose
//! (`pinhole_ultrasound::sweep`), written as a PLUS tracked sequence (`.seq.mha`). Not for
//! clinical use.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use pinhole_io::sequence::{
    FramePixels, FrameTransform, PixelType, TrackedFrame, TrackedSequence, TransformStatus,
};
use pinhole_pipeline::Observer;
use pinhole_ultrasound::tracking::image_to_ras_from_lps;
use pinhole_ultrasound::{
    reslice_labels_into, sweep_poses, ImagePlane, Probe, ProbePose, SimulationParams, Simulator,
    SweepMotion,
};
use pinhole_volume::Volume;

#[derive(Subcommand)]
pub enum UsCommand {
    /// Simulate a B-mode frame from a CT (after Wein et al. 2008): reflections at
    /// impedance changes, attenuation, bone and air shadows, speckle. Not for clinical use.
    Simulate(Box<SimulateArgs>),
    /// Simulate a tracked sweep around the pose (sliding or tilting the probe), written
    /// as a PLUS / Slicer sequence file (`.seq.mha`) with each frame's ImageToReference
    /// (Reference = RAS). Not for clinical use.
    Sweep(Box<SweepArgs>),
    /// Compound a tracked sweep (sequence file) into a volume, pixel nearest neighbour
    /// with hole filling as PLUS does; NRRD or NIfTI for Slicer. Not for clinical use.
    Reconstruct(Box<super::us_tracked::ReconstructArgs>),
    /// Correct the fusion from landmark pairs (ultrasound point ↔ CT point, Slicer
    /// markups): a rigid fit, written as the corrected registration. Not for clinical use.
    Landmarks(Box<super::us_tracked::LandmarksArgs>),
    /// Correct the fusion automatically: a tracked sweep registered rigidly to the CT
    /// (LC², from the tracked pose, ±10 mm / ±10°), written as the corrected registration.
    /// Validated on simulated sweeps only. Not for clinical use.
    Register(Box<super::us_tracked::RegisterArgs>),
    /// Fuse ultrasound frames from a file (PNG, 2-D NIfTI, DICOM US incl. multi-frame)
    /// with the CT: reslice, blended pictures, fuse.json. Not for clinical use.
    Fuse(Box<super::us_fuse::FuseArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ProbeKind {
    /// Curved array: a fan (`--radius-mm`, `--fov-deg`).
    Convex,
    /// Linear array: parallel beams (`--width-mm`).
    Linear,
}

/// The CT, the probe and its pose, and the simulation settings (`us simulate`, `us sweep`).
#[derive(Args)]
pub struct ProbeArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// Probe: convex (fan) or linear.
    #[arg(long, value_enum, default_value = "convex")]
    probe: ProbeKind,
    /// Centre of the transducer face `x,y,z`, LPS mm (as every Pinhole point: x towards
    /// the patient's left, y posterior, z superior; negate x and y of a RAS point).
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true)]
    pose: [f64; 3],
    /// Direction of the central beam into the patient `x,y,z`, LPS.
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true)]
    direction: [f64; 3],
    /// Direction along the array, the image's +x (screen right) `x,y,z`, LPS. Default:
    /// the patient's left (transverse convention: patient's right on screen left), or the
    /// feet when the beam runs left-right.
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true)]
    lateral: Option<[f64; 3]>,
    /// Imaging depth, mm.
    #[arg(long, value_parser = super::finite, default_value_t = 150.0, allow_hyphen_values = true)]
    depth_mm: f64,
    /// Centre frequency, MHz (1–20).
    #[arg(long, value_parser = super::finite, default_value_t = 3.5, allow_hyphen_values = true)]
    frequency_mhz: f64,
    /// Convex probe: radius of the array, mm.
    #[arg(long, value_parser = super::finite, default_value_t = 60.0, allow_hyphen_values = true)]
    radius_mm: f64,
    /// Convex probe: field of view, degrees (0–180, exclusive).
    #[arg(long, value_parser = super::finite, default_value_t = 60.0, allow_hyphen_values = true)]
    fov_deg: f64,
    /// Linear probe: width of the array, mm.
    #[arg(long, value_parser = super::finite, default_value_t = 40.0, allow_hyphen_values = true)]
    width_mm: f64,
    /// Output size in pixels (square image, square pixels).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Overall gain, dB.
    #[arg(long, value_parser = super::finite, default_value_t = 0.0, allow_hyphen_values = true)]
    gain_db: f64,
    /// Displayed dynamic range, dB.
    #[arg(long, value_parser = super::finite, default_value_t = 60.0, allow_hyphen_values = true)]
    dynamic_range_db: f64,
    /// No time-gain compensation.
    #[arg(long)]
    no_tgc: bool,
    /// Speckle seed (the same seed gives the same image).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Go on when the CT does not look like a CT in Hounsfield units (MR, PET, NM …),
    /// with a warning. Default: refuse.
    #[arg(long)]
    allow_non_ct: bool,
}

#[derive(Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    probe: ProbeArgs,
    /// Label map: the label ids the frame crosses (pixels per id) go into the sidecar.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Output PNG (8-bit grey, row 0 = the top of the image, nearest the probe); a
    /// sidecar `<out>.json` holds its ImageToLps.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
#[command(group(ArgGroup::new("motion").required(true).args(["step_mm", "tilt_deg"])))]
pub struct SweepArgs {
    #[command(flatten)]
    probe: ProbeArgs,
    /// Number of frames, centred on the pose (1–10000).
    #[arg(long)]
    frames: usize,
    /// Slide the probe this far between frames (mm), along --sweep-direction.
    #[arg(long, value_parser = super::finite, allow_hyphen_values = true)]
    step_mm: Option<f64>,
    /// Direction of a sliding sweep `x,y,z`, LPS. Default: the image plane's normal
    /// (lateral × beam), as a freehand sweep.
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true,
          requires = "step_mm")]
    sweep_direction: Option<[f64; 3]>,
    /// Tilt (rock) the probe this many degrees between frames, about its array axis
    /// through the centre of its face; positive towards lateral × beam.
    #[arg(long, value_parser = super::finite, allow_hyphen_values = true)]
    tilt_deg: Option<f64>,
    /// Frames per second: frame k's timestamp is k / fps.
    #[arg(long, value_parser = super::finite, default_value_t = 30.0)]
    fps: f64,
    /// Output sequence file (`.seq.mha`, written atomically): 8-bit frames, each with
    /// ImageToReferenceTransform (Reference = RAS) and its timestamp.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: &UsCommand, terminal: &dyn Observer) -> anyhow::Result<()> {
    match command {
        UsCommand::Simulate(args) => simulate(args, terminal),
        UsCommand::Sweep(args) => sweep(args, terminal),
        UsCommand::Reconstruct(args) => super::us_tracked::reconstruct_sweep(args, terminal),
        UsCommand::Landmarks(args) => super::us_tracked::landmarks(args, terminal),
        UsCommand::Register(args) => super::us_tracked::register_sweep(args, terminal),
        UsCommand::Fuse(args) => super::us_fuse::fuse(args, terminal),
    }
}

/// The image's +x when `--lateral` is not given: the patient's left (+x LPS) made
/// orthogonal to the beam, or the feet (−z) when the beam runs nearly left-right.
fn default_lateral(direction: [f64; 3]) -> [f64; 3] {
    let n = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n > 0.0 && (direction[0] / n).abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 0.0, -1.0]
    }
}

/// `<out>.json` next to the PNG (`us.png` → `us.png.json`).
fn sidecar_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

impl ProbeArgs {
    /// The simulator (parameters checked) and the pose (not yet checked).
    fn simulator(&self) -> anyhow::Result<(Simulator, ProbePose)> {
        let probe = match self.probe {
            ProbeKind::Convex => Probe::Convex {
                radius_mm: self.radius_mm,
                fov_deg: self.fov_deg,
            },
            ProbeKind::Linear => Probe::Linear {
                width_mm: self.width_mm,
            },
        };
        let params = SimulationParams {
            probe,
            depth_mm: self.depth_mm,
            frequency_mhz: self.frequency_mhz,
            width_px: self.size,
            height_px: self.size,
            line_count: None,
            gain_db: self.gain_db,
            dynamic_range_db: self.dynamic_range_db,
            tgc: !self.no_tgc,
            seed: self.seed,
        };
        let simulator = Simulator::new(params)?;
        let pose = ProbePose {
            centre_lps: self.pose,
            beam_lps: self.direction,
            lateral_lps: self
                .lateral
                .unwrap_or_else(|| default_lateral(self.direction)),
        };
        Ok((simulator, pose))
    }

    /// The CT, checked to look like one (the warning when allowed anyway).
    fn load_ct(&self, terminal: &dyn Observer) -> anyhow::Result<(Volume<f32>, Option<String>)> {
        Ok(pinhole_pipeline::inputs::load_checked_ct(
            &self.ct,
            super::not_ct_policy(self.allow_non_ct),
            terminal,
        )?)
    }
}

fn simulate(args: &SimulateArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    // Parameters and pose are checked before the CT is read.
    let (simulator, pose) = args.probe.simulator()?;
    let probe = simulator.params().probe;
    simulator.plane(&pose)?;
    let sidecar = sidecar_path(&args.out);
    super::refuse_overwriting_inputs(
        &[Some(args.probe.ct.as_path()), args.labels.as_deref()],
        &[args.out.clone(), sidecar.clone()],
    )?;

    let (ct, not_ct_warning) = args.probe.load_ct(terminal)?;
    let frame = simulator.simulate(&ct, &pose)?;
    let plane = &frame.plane;
    let mut warnings: Vec<String> = not_ct_warning.into_iter().collect();
    match ct.sample_trilinear(pose.centre_lps) {
        None => warnings.push(format!(
            "the probe's centre {:?} (LPS mm) is outside the CT",
            pose.centre_lps
        )),
        Some(hu) if hu < f64::from(pinhole_ultrasound::simulate::AIR_BELOW_HU) => {
            warnings.push(format!(
                "the probe's centre is in air ({hu:.0} HU): no coupling, beams starting in \
                 air stay dark; place it on or just under the skin"
            ));
        }
        Some(_) => {}
    }
    let lit = frame.pixels.iter().filter(|&&p| p > 0).count();
    if lit == 0 {
        warnings.push(
            "the simulated image is blank: the probe is outside the body, in air, or \
             behind bone"
                .to_owned(),
        );
    }
    let structures = match &args.labels {
        Some(path) => {
            let labels = pinhole_pipeline::inputs::load_labels(path, terminal)?;
            let mut ids = vec![0u16; plane.pixel_count()];
            reslice_labels_into(&labels, plane, &mut ids)?;
            let mut counts = std::collections::BTreeMap::<u16, usize>::new();
            for (&id, &grey) in ids.iter().zip(&frame.pixels) {
                if id != 0 && grey > 0 {
                    *counts.entry(id).or_default() += 1;
                }
            }
            Some(
                counts
                    .into_iter()
                    .map(|(id, pixels)| serde_json::json!({ "label": id, "pixels": pixels }))
                    .collect::<Vec<_>>(),
            )
        }
        None => None,
    };
    let (width, height) = (plane.width_px(), plane.height_px());
    pinhole_io::png::write_gray8(
        &args.out,
        u32::try_from(width)?,
        u32::try_from(height)?,
        &frame.pixels,
    )?;
    eprintln!("wrote {}", args.out.display());
    let probe_json = match probe {
        Probe::Convex { radius_mm, fov_deg } => {
            serde_json::json!({ "kind": "convex", "radius_mm": radius_mm, "fov_deg": fov_deg })
        }
        Probe::Linear { width_mm } => serde_json::json!({ "kind": "linear", "width_mm": width_mm }),
    };
    let json = serde_json::json!({
        "note": format!(
            "{} Simulated ultrasound from CT (after Wein et al. 2008), not an acquired image.",
            pinhole_pipeline::report::DISCLAIMER
        ),
        "image": args.out.file_name().map(|n| n.to_string_lossy().into_owned()),
        "width_px": width,
        "height_px": height,
        "pixel_mm": simulator.pixel_mm(),
        "image_to_lps": plane.image_to_lps(),
        "image_to_lps_convention": "row-major 4x4, LPS mm: pixel (i, j) centre = origin + i*col_x + j*col_y; i along a row (image +x), j down the image",
        "probe": probe_json,
        "pose": {
            "centre_lps": pose.centre_lps,
            "beam_lps": pose.beam_lps,
            "lateral_lps": pose.lateral_lps,
        },
        "depth_mm": args.probe.depth_mm,
        "frequency_mhz": args.probe.frequency_mhz,
        "gain_db": args.probe.gain_db,
        "dynamic_range_db": args.probe.dynamic_range_db,
        "tgc": !args.probe.no_tgc,
        "seed": args.probe.seed,
        "scan_lines": simulator.line_count(),
        "samples_per_line": simulator.samples_per_line(),
        "lit_pixels": lit,
        "structures": structures,
        "warnings": warnings,
    });
    pinhole_io::atomic::write_atomic(&sidecar, serde_json::to_string_pretty(&json)?.as_bytes())?;
    eprintln!("wrote {}", sidecar.display());
    for warning in &warnings {
        terminal.warn(warning);
    }
    println!("{}", pinhole_pipeline::report::DISCLAIMER);
    Ok(())
}

/// Most pixel bytes a sweep may hold (frames × size²): the file is built in memory.
const MAX_SWEEP_BYTES: usize = 1 << 30;

/// Frames listed by index in a warning before the rest are only counted.
const LISTED_FRAMES: usize = 10;

fn sweep(args: &SweepArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    // Everything is checked before the CT is read.
    if !(args.fps > 0.0 && args.fps <= 1000.0) {
        bail!(
            "--fps {} is out of range: expected 0 < fps ≤ 1000",
            args.fps
        );
    }
    let name = args.out.to_string_lossy().to_ascii_lowercase();
    if !name.ends_with(".mha") {
        bail!(
            "--out {}: a sweep is written as a sequence metafile, give a .seq.mha name",
            args.out.display()
        );
    }
    let (simulator, pose) = args.probe.simulator()?;
    let start = simulator.plane(&pose)?;
    let bytes = args.frames.saturating_mul(start.pixel_count());
    if bytes > MAX_SWEEP_BYTES {
        bail!(
            "--frames {} of {} × {} pixels need {bytes} bytes, more than {MAX_SWEEP_BYTES}: \
             fewer frames or a smaller --size",
            args.frames,
            start.width_px(),
            start.height_px()
        );
    }
    let motion = match (args.step_mm, args.tilt_deg) {
        (Some(step_mm), None) => SweepMotion::Translate {
            direction_lps: args.sweep_direction.unwrap_or_else(|| start.normal_lps()),
            step_mm,
        },
        (None, Some(step_deg)) => SweepMotion::Tilt { step_deg },
        _ => bail!("give either --step-mm or --tilt-deg"),
    };
    let poses = sweep_poses(&pose, &motion, args.frames)?;
    for p in &poses {
        simulator.plane(p)?;
    }
    super::refuse_overwriting_inputs(
        &[Some(args.probe.ct.as_path())],
        std::slice::from_ref(&args.out),
    )?;

    let (ct, not_ct_warning) = args.probe.load_ct(terminal)?;
    let (sequence, frame_warnings) =
        simulate_sequence(&simulator, &ct, &poses, args.fps, terminal)?;
    let mut warnings: Vec<String> = not_ct_warning.into_iter().collect();
    warnings.extend(frame_warnings);
    let pixel_mm = simulator.pixel_mm();
    pinhole_io::sequence::write_sequence(&args.out, &sequence)?;
    eprintln!("wrote {}", args.out.display());
    let motion_text = match motion {
        SweepMotion::Translate {
            direction_lps,
            step_mm,
        } => format!("sliding {step_mm} mm per frame along {direction_lps:?} (LPS)"),
        SweepMotion::Tilt { step_deg } => format!("tilting {step_deg}° per frame"),
    };
    for warning in &warnings {
        terminal.warn(warning);
    }
    println!(
        "simulated sweep: {} frames of {} × {} pixels ({pixel_mm:.3} mm), {motion_text}, \
         {:.2} s at {} frames/s; ImageToReference in RAS (identity registration)",
        poses.len(),
        start.width_px(),
        start.height_px(),
        (poses.len() as f64 - 1.0).max(0.0) / args.fps,
        args.fps
    );
    println!("{}", pinhole_pipeline::report::DISCLAIMER);
    Ok(())
}

/// A simulated sweep as a PLUS tracked sequence: each pose's B-mode frame (8-bit) with its
/// `ImageToReference` (Reference = RAS, identity registration) and timestamp `k / fps`;
/// the warnings name frames whose probe centre or image lies outside the CT, or that came
/// out blank. Shared by `us sweep` and `pinhole demo`.
pub(crate) fn simulate_sequence(
    simulator: &Simulator,
    ct: &Volume<f32>,
    poses: &[ProbePose],
    fps: f64,
    terminal: &dyn Observer,
) -> anyhow::Result<(TrackedSequence, Vec<String>)> {
    let mut frames = Vec::with_capacity(poses.len());
    let mut partly_outside = Vec::new();
    let mut blank = Vec::new();
    let mut centre_outside = Vec::new();
    let mut size = (0, 0);
    terminal.begin("simulating the sweep");
    for (k, p) in poses.iter().enumerate() {
        let frame = simulator.simulate(ct, p)?;
        size = (frame.plane.width_px(), frame.plane.height_px());
        if frame.pixels.iter().all(|&v| v == 0) {
            blank.push(k);
        }
        if !corners_inside(ct, &frame.plane) {
            partly_outside.push(k);
        }
        if ct.sample_trilinear(p.centre_lps).is_none() {
            centre_outside.push(k);
        }
        frames.push(TrackedFrame {
            timestamp_s: Some(k as f64 / fps),
            transforms: vec![FrameTransform {
                name: "ImageToReference".to_owned(),
                // `+ 0.0`: no "-0" in the file.
                matrix: Some(
                    image_to_ras_from_lps(&frame.plane.image_to_lps()).map(|r| r.map(|v| v + 0.0)),
                ),
                status: TransformStatus::Ok,
            }],
            fields: Vec::new(),
            pixels: FramePixels::U8(frame.pixels),
        });
        terminal.advance(k + 1, poses.len());
    }
    terminal.end();
    let mut warnings = Vec::new();
    for (list, what) in [
        (&centre_outside, "the probe's centre lies outside the CT"),
        (
            &partly_outside,
            "the image reaches outside the CT (air there)",
        ),
        (
            &blank,
            "the simulated image is blank (probe outside the body, in air or behind bone)",
        ),
    ] {
        if !list.is_empty() {
            warnings.push(format!(
                "{} of {} frame(s): {what}: frames {}",
                list.len(),
                poses.len(),
                frame_list(list)
            ));
        }
    }
    let pixel_mm = simulator.pixel_mm();
    let sequence = TrackedSequence {
        width: size.0,
        height: size.1,
        pixel_type: PixelType::U8,
        spacing_mm: [pixel_mm; 2],
        orientation: Some("MF".to_owned()),
        frames,
        header_fields: vec![("UltrasoundImageType".to_owned(), "BRIGHTNESS".to_owned())],
        warnings: Vec::new(),
    };
    Ok((sequence, warnings))
}

/// Whether the four corner pixels of `plane` lie inside the CT.
fn corners_inside(ct: &Volume<f32>, plane: &ImagePlane) -> bool {
    let (w, h) = (
        plane.width_px() as f64 - 1.0,
        plane.height_px() as f64 - 1.0,
    );
    [[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]]
        .into_iter()
        .all(|c| ct.sample_trilinear(plane.pixel_to_lps(c)).is_some())
}

/// `0, 1, 2, … (and N more)`.
fn frame_list(frames: &[usize]) -> String {
    let mut text = frames
        .iter()
        .take(LISTED_FRAMES)
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if frames.len() > LISTED_FRAMES {
        text += &format!(" and {} more", frames.len() - LISTED_FRAMES);
    }
    text
}
