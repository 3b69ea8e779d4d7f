//! `pinhole us simulate`: a B-mode ultrasound frame simulated from a CT for a probe pose
//! (`pinhole_ultrasound::simulate`), written as an 8-bit PNG and a JSON sidecar with
//! its `ImageToLps`. Not for clinical use.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use pinhole_pipeline::Observer;
use pinhole_ultrasound::{reslice_labels_into, Probe, ProbePose, SimulationParams, Simulator};

#[derive(Subcommand)]
pub enum UsCommand {
    /// Simulate a B-mode frame from a CT (after Wein et al. 2008): reflections at
    /// impedance changes, attenuation, bone and air shadows, speckle. Not for clinical use.
    Simulate(Box<SimulateArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ProbeKind {
    /// Curved array: a fan (`--radius-mm`, `--fov-deg`).
    Convex,
    /// Linear array: parallel beams (`--width-mm`).
    Linear,
}

#[derive(Args)]
pub struct SimulateArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// Label map: the label ids the frame crosses (pixels per id) go into the sidecar.
    #[arg(long)]
    labels: Option<PathBuf>,
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
    /// with a warning in the sidecar. Default: refuse.
    #[arg(long)]
    allow_non_ct: bool,
    /// Output PNG (8-bit grey, row 0 = the top of the image, nearest the probe); a
    /// sidecar `<out>.json` holds its ImageToLps.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: &UsCommand, terminal: &dyn Observer) -> anyhow::Result<()> {
    match command {
        UsCommand::Simulate(args) => simulate(args, terminal),
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

fn simulate(args: &SimulateArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let probe = match args.probe {
        ProbeKind::Convex => Probe::Convex {
            radius_mm: args.radius_mm,
            fov_deg: args.fov_deg,
        },
        ProbeKind::Linear => Probe::Linear {
            width_mm: args.width_mm,
        },
    };
    let params = SimulationParams {
        probe,
        depth_mm: args.depth_mm,
        frequency_mhz: args.frequency_mhz,
        width_px: args.size,
        height_px: args.size,
        line_count: None,
        gain_db: args.gain_db,
        dynamic_range_db: args.dynamic_range_db,
        tgc: !args.no_tgc,
        seed: args.seed,
    };
    // Parameters and pose are checked before the CT is read.
    let simulator = Simulator::new(params)?;
    let pose = ProbePose {
        centre_lps: args.pose,
        beam_lps: args.direction,
        lateral_lps: args
            .lateral
            .unwrap_or_else(|| default_lateral(args.direction)),
    };
    simulator.plane(&pose)?;
    let sidecar = sidecar_path(&args.out);
    super::refuse_overwriting_inputs(
        &[Some(args.ct.as_path()), args.labels.as_deref()],
        &[args.out.clone(), sidecar.clone()],
    )?;

    let (ct, not_ct_warning) = pinhole_pipeline::inputs::load_checked_ct(
        &args.ct,
        super::not_ct_policy(args.allow_non_ct),
        terminal,
    )?;
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
        "depth_mm": args.depth_mm,
        "frequency_mhz": args.frequency_mhz,
        "gain_db": args.gain_db,
        "dynamic_range_db": args.dynamic_range_db,
        "tgc": !args.no_tgc,
        "seed": args.seed,
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
