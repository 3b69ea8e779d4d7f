//! `pinhole us fuse`: ultrasound frames from a file (PNG, 2-D NIfTI, DICOM US incl.
//! multi-frame; `pinhole_io::us_frame`) fused offline with the CT: the CT (and labels)
//! resliced on each frame's pixels, written as the blended picture `fused_NNN.png` and
//! the CT alone `reslice_NNN.png` (label contours, the plan, orientation letters, a scale
//! bar), and `fuse.json`. Not for clinical use.
//!
//! Geometry (`ImageToLps`), in order: `--image-to-lps` (a `us simulate` sidecar), else
//! `--image-to-reference` composed with `--registration` (`ReferenceToRAS`, default
//! identity), else the NIfTI frame's own; a PNG or DICOM without either flag is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args};
use pinhole_io::us_frame::{read_us_frames, UsFrames};
use pinhole_pipeline::Observer;
use pinhole_server::fusion::{window_u8, US_BLEND_CT_WEIGHT};
use pinhole_ultrasound::compose::{self, LabelPalette, Overlay};
use pinhole_ultrasound::tracking;
use pinhole_ultrasound::{reslice, ImagePlane, ResliceOptions};
use pinhole_volume::math::{Mat4, IDENTITY4};
use serde_json::json;

/// A frame's pixel size may differ this much (relative) from the geometry's before a
/// warning says so.
const SPACING_WARNING_FRACTION: f64 = 0.01;

#[derive(Args)]
#[command(group(ArgGroup::new("geometry").args(["image_to_lps", "image_to_reference"])))]
pub struct FuseArgs {
    /// Ultrasound frame: PNG (8-bit grey or colour), 2-D NIfTI (with its geometry) or
    /// DICOM (every frame of a multi-frame file, colour as luminance).
    frame: PathBuf,
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// Label map: contours on the pictures, the labels each frame crosses in fuse.json.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Label table for the contours' colours and names (default: TotalSegmentator v2).
    #[arg(long)]
    labels_table: Option<String>,
    /// A needle plan (plan.json): its best path and target projected on the frame.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// The frame's ImageToLps from a JSON file holding `image_to_lps` (row-major 4x4, as
    /// `pinhole us simulate` writes next to its PNG).
    #[arg(long)]
    image_to_lps: Option<PathBuf>,
    /// The frame's ImageToReference (4x4 text or ITK transform, pixels → tracker mm).
    #[arg(long)]
    image_to_reference: Option<PathBuf>,
    /// Tracker registration ReferenceToRAS (ITK .tfm or 4x4 text); default identity.
    #[arg(long, requires = "image_to_reference")]
    registration: Option<PathBuf>,
    /// Only this frame of a multi-frame file (0-based); default every frame.
    #[arg(long)]
    frame_index: Option<usize>,
    /// Weight of the CT in the blended picture (0–1).
    #[arg(long, value_parser = super::finite, default_value_t = f64::from(US_BLEND_CT_WEIGHT))]
    ct_weight: f64,
    /// Go on when the CT does not look like a CT in Hounsfield units, with a warning.
    #[arg(long)]
    allow_non_ct: bool,
    /// Output folder: fused_NNN.png, reslice_NNN.png, fuse.json.
    #[arg(long)]
    out: PathBuf,
}

/// Where the geometry came from.
struct Geometry {
    image_to_lps: Mat4,
    source: String,
    /// The frame size the geometry was made for, when it says.
    size_px: Option<[usize; 2]>,
}

pub fn fuse(args: &FuseArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    super::marking_failure(&args.out, "us fuse", || fuse_frames(args, terminal))
}

fn fuse_frames(args: &FuseArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.ct_weight) {
        bail!(
            "--ct-weight {} is out of range: expected 0–1",
            args.ct_weight
        );
    }
    let frames = read_us_frames(&args.frame)?;
    let indices = frame_indices(&frames, args.frame_index, &args.frame)?;
    let geometry = geometry(args, &frames)?;
    let (w, h) = (frames.width, frames.height);
    if let Some([gw, gh]) = geometry.size_px {
        if [gw, gh] != [w, h] {
            bail!(
                "{}: the frame is {w} × {h} pixels but {} describes a {gw} × {gh} frame",
                args.frame.display(),
                geometry.source
            );
        }
    }
    let plane = ImagePlane::new(geometry.image_to_lps, w, h)
        .with_context(|| format!("the frame's ImageToLps (from {})", geometry.source))?;
    let mut warnings = frames.warnings.clone();
    if let Some(s) = frames.spacing_mm {
        let p = plane.spacing_mm();
        if (0..2).any(|a| (s[a] - p[a]).abs() > SPACING_WARNING_FRACTION * p[a]) {
            warnings.push(format!(
                "the file gives {:.4} × {:.4} mm pixels but the geometry {:.4} × {:.4} mm",
                s[0], s[1], p[0], p[1]
            ));
        }
    }
    let names: Vec<String> = indices
        .iter()
        .flat_map(|k| [format!("fused_{k:03}.png"), format!("reslice_{k:03}.png")])
        .chain(std::iter::once("fuse.json".to_owned()))
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    super::refuse_overwriting_inputs(
        &[
            Some(args.frame.as_path()),
            Some(args.ct.as_path()),
            args.labels.as_deref(),
            args.plan.as_deref(),
            args.image_to_lps.as_deref(),
            args.image_to_reference.as_deref(),
            args.registration.as_deref(),
        ],
        &super::folder_files(&args.out, &name_refs),
    )?;
    let plan = match &args.plan {
        Some(p) => Some(pinhole_pipeline::needle::PlanPaths::read(p)?.planned_needle()),
        None => None,
    };
    let (ct, not_ct) = pinhole_pipeline::inputs::load_checked_ct(
        &args.ct,
        super::not_ct_policy(args.allow_non_ct),
        terminal,
    )?;
    warnings.extend(not_ct);
    let labels = match &args.labels {
        Some(p) => Some(pinhole_pipeline::inputs::load_labels(p, terminal)?),
        None => None,
    };
    let (_, table) = pinhole_pipeline::inputs::label_table(args.labels_table.as_deref())?;
    let resliced = reslice(&ct, labels.as_ref(), &plane, &ResliceOptions::default())?;
    let ct_grey: Vec<u8> = resliced.ct_hu.iter().map(|&hu| window_u8(hu)).collect();
    let inside = resliced
        .ct_hu
        .iter()
        .enumerate()
        .filter(|(o, _)| {
            ct.sample_trilinear(plane.pixel_to_lps([(o % w) as f64, (o / w) as f64]))
                .is_some()
        })
        .count();
    if inside == 0 {
        warnings.push("the frame lies entirely outside the CT: check the geometry".into());
    }
    let crossed = labels_crossed(resliced.labels.as_deref());
    let palette = LabelPalette::new(
        crossed
            .keys()
            .map(|&id| (u32::from(id), table.color_of(u32::from(id)))),
    );
    let overlay = Overlay {
        labels: resliced.labels.as_deref().map(|l| (l, &palette)),
        zones: &[],
        plan: plan.as_ref().map(|p| {
            compose::plan_projection(
                &plane,
                p.entry_lps,
                p.target_lps,
                pinhole_guidance::engine::DEFAULT_TARGET_RADIUS_MM,
            )
        }),
        needle: None,
        line_width_px: (w.min(h) / 256).clamp(1, 3),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // As every result folder: the report goes last, so its presence means complete.
    let json_path = args.out.join("fuse.json");
    super::remove_if_present(&json_path)?;
    let mut reslice_rgb = Vec::new();
    compose::reslice_view(&ct_grey, w, h, &overlay, &mut reslice_rgb)?;
    let mut written = Vec::new();
    let mut blend_rgb = Vec::new();
    for &k in &indices {
        compose::blend(
            &frames.frames[k],
            &ct_grey,
            w,
            h,
            args.ct_weight as f32,
            &overlay,
            &mut blend_rgb,
        )?;
        let fused = args.out.join(format!("fused_{k:03}.png"));
        let resliced_png = args.out.join(format!("reslice_{k:03}.png"));
        write_picture(&fused, &blend_rgb, &plane)?;
        write_picture(&resliced_png, &reslice_rgb, &plane)?;
        written.push(
            json!({ "index": k, "fused": file_name(&fused), "reslice": file_name(&resliced_png) }),
        );
    }
    let report = json!({
        "note": pinhole_pipeline::report::DISCLAIMER,
        "frame_file": pinhole_pipeline::provenance::recorded_path(&args.frame),
        "format": frames.format,
        "width_px": w,
        "height_px": h,
        "frames_in_file": frames.frames.len(),
        "frames": written,
        "geometry": {
            "source": geometry.source,
            "image_to_lps": plane.image_to_lps(),
            "spacing_mm": plane.spacing_mm(),
            "right_lps": plane.step_x_lps(),
            "down_lps": plane.step_y_lps(),
            "pixels_inside_ct": inside,
        },
        "ct_window_hu": { "level": pinhole_server::fusion::CT_WINDOW_LEVEL_HU, "width": pinhole_server::fusion::CT_WINDOW_WIDTH_HU },
        "ct_weight": args.ct_weight,
        "labels_crossed": resliced.labels.as_ref().map(|_| crossed.iter().map(|(&id, &pixels)| json!({
            "label": id,
            "name": table.name(u32::from(id)),
            "pixels": pixels,
        })).collect::<Vec<_>>()),
        "warnings": warnings,
    });
    pinhole_io::atomic::write_atomic(
        &json_path,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    super::remove_if_present(&args.out.join(pinhole_pipeline::report::FAILED_MARKER))?;
    for warning in &warnings {
        terminal.warn(warning);
    }
    println!(
        "fused {} frame(s) of {w} × {h} pixels ({}) into {}",
        indices.len(),
        geometry.source,
        args.out.display()
    );
    println!("{}", pinhole_pipeline::report::DISCLAIMER);
    Ok(())
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The frames to fuse: all, or the one asked for (which must exist).
fn frame_indices(
    frames: &UsFrames,
    asked: Option<usize>,
    path: &Path,
) -> anyhow::Result<Vec<usize>> {
    let n = frames.frames.len();
    match asked {
        None => Ok((0..n).collect()),
        Some(k) if k < n => Ok(vec![k]),
        Some(k) => bail!(
            "--frame-index {k}: {} holds {n} frame(s) (0–{})",
            path.display(),
            n.saturating_sub(1)
        ),
    }
}

/// The frame's ImageToLps from the flags, else from the file; the error names the flags.
fn geometry(args: &FuseArgs, frames: &UsFrames) -> anyhow::Result<Geometry> {
    if let Some(path) = &args.image_to_lps {
        return sidecar_geometry(path);
    }
    if let Some(path) = &args.image_to_reference {
        let image_to_reference = pinhole_io::transform::read_registration(path)?;
        tracking::check_affine("ImageToReference", &image_to_reference)
            .with_context(|| path.display().to_string())?;
        let registration = match &args.registration {
            Some(p) => pinhole_io::transform::read_registration(p)?,
            None => IDENTITY4,
        };
        let source = match &args.registration {
            Some(r) => format!("{} with registration {}", path.display(), r.display()),
            None => format!("{} (Reference = RAS)", path.display()),
        };
        return Ok(Geometry {
            image_to_lps: tracking::image_to_lps(&image_to_reference, &registration),
            source,
            size_px: None,
        });
    }
    match frames.image_to_lps {
        Some(m) => Ok(Geometry {
            image_to_lps: m,
            source: format!(
                "{} (NIfTI geometry)",
                pinhole_pipeline::provenance::recorded_path(&args.frame)
            ),
            size_px: None,
        }),
        None => bail!(
            "{}: the frame has no patient geometry (PNG and DICOM ultrasound carry none): give \
             --image-to-lps FILE.json (the sidecar `pinhole us simulate` writes) or \
             --image-to-reference FILE [--registration FILE]",
            args.frame.display()
        ),
    }
}

/// `image_to_lps` (and `width_px` / `height_px` when present) of a JSON file.
fn sidecar_geometry(path: &Path) -> anyhow::Result<Geometry> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let matrix = value.get("image_to_lps").unwrap_or(&value);
    let image_to_lps: Mat4 = serde_json::from_value(matrix.clone()).with_context(|| {
        format!(
            "{}: no `image_to_lps` 4x4 matrix (row-major, as `pinhole us simulate` writes)",
            path.display()
        )
    })?;
    tracking::check_affine("ImageToLps", &image_to_lps)
        .with_context(|| path.display().to_string())?;
    let size = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
    };
    Ok(Geometry {
        image_to_lps,
        source: pinhole_pipeline::provenance::recorded_path(path),
        size_px: size("width_px").zip(size("height_px")).map(|(w, h)| [w, h]),
    })
}

/// Pixels per non-zero label id.
fn labels_crossed(labels: Option<&[u16]>) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for &id in labels.unwrap_or_default() {
        if id != 0 {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

/// An RGB picture of the frame with orientation letters and a scale bar, as PNG.
fn write_picture(path: &Path, rgb: &[u8], plane: &ImagePlane) -> anyhow::Result<()> {
    let mut rgb = rgb.to_vec();
    let mut canvas = pinhole_volume::annotate::Canvas {
        rgb: &mut rgb,
        width: plane.width_px(),
        height: plane.height_px(),
    };
    canvas.orientation_letters(plane.step_x_lps(), plane.step_y_lps());
    canvas.scale_bar(plane.spacing_mm()[0]);
    pinhole_io::png::write_rgb8(
        path,
        u32::try_from(plane.width_px())?,
        u32::try_from(plane.height_px())?,
        &rgb,
    )?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
