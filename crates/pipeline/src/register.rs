//! 2D/3D registration (`pinhole register`): the CT's pose relative to the C-arm from a
//! live X-ray; `pose.json` ([`RegistrationReport`]) and `overlay.png`.

use std::path::{Path, PathBuf};

use pinhole_io::labels::LabelTable;
use pinhole_register::volume_prep::mu_pyramid;
use pinhole_register::{
    default_levels, register, CArmPose, CpuRenderer, LevelReport, LevelSpec, Polarity, Pose,
    Registration, Renderer, Settings, Similarity, DEFAULT_LEVELS_MM,
};
use pinhole_volume::{Vec3, Volume};
use pinhole_xray::{Attenuation, CArm, Detector, Image, Projection};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, OrInvalid, Result};
use crate::figures::{write_picture, xray_overlay, RgbPicture};
use crate::inputs::{check_ct, label_table, labels_of, load, require_same_grid, NotCt};
use crate::limits;
use crate::needle::PlanPaths;
use crate::observe::Observer;
use crate::report::{unversioned, versioned_report, write_folder, Report, DISCLAIMER, VERSION};

/// A registration to run.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationRequest {
    pub ct: PathBuf,
    /// The live X-ray (PNG 8/16-bit, single-file DICOM, 2-D NIfTI); row 0 at the top.
    pub xray: PathBuf,
    /// The frame of a multi-frame DICOM X-ray (0-based; PNG and NIfTI hold frame 0 only).
    pub xray_frame: usize,
    /// Lines added to pose.json's `warnings` by whoever filled the request (e.g. which
    /// C-arm values were taken from the X-ray's DICOM header).
    pub extra_warnings: Vec<String>,
    pub labels: Option<PathBuf>,
    pub labels_table: Option<String>,
    /// Register on these structures only (`vertebrae,rib`: every `vertebrae_*`, `rib_*`).
    pub mask_labels: Vec<String>,
    /// Structures outlined on the overlay (default: the mask labels, else the 8 largest).
    pub overlay: Vec<String>,
    /// A needle plan drawn on the overlay at the registered pose.
    pub plan: Option<PathBuf>,
    /// The nominal C-arm (angles, SID/SOD, source side, isocentre; detector from the
    /// X-ray's size and `pixel_mm`).
    pub init_lao_deg: f64,
    pub init_cran_deg: f64,
    pub sid_mm: f64,
    pub sod_mm: f64,
    /// Detector pixel pitch (default: a 400 mm detector across the image width).
    pub pixel_mm: Option<f64>,
    pub source_anterior: bool,
    /// Rotation centre (default: the CT's centre).
    pub isocenter_lps: Option<Vec3>,
    /// Bone dark: skip polarity detection.
    pub invert: bool,
    pub similarity: Similarity,
    /// Voxel size (mm) of the CT at each level, coarse to fine.
    pub levels_mm: Vec<f64>,
    pub seed: u64,
    /// Render the DRRs on the GPU.
    pub gpu: bool,
    /// Below this final similarity the registration has not converged and no pose is
    /// returned (default [`DEFAULT_MIN_SIMILARITY`]).
    pub min_similarity: f64,
    /// Also register the X-ray mirrored left-right through the first two levels, and
    /// refuse when it fits better by more than [`MIRROR_MARGIN`] (a flipped image;
    /// default on).
    pub mirror_check: bool,
    /// A CT that does not look like one: refuse (default) or go on with a warning.
    pub not_ct: NotCt,
}

/// The final similarity below which a registration is "not converged". Measured with
/// gradient NCC on the abdomen CT at 64² (6.25 mm pixels): the right view 0.98, the
/// right view with σ = 25 grey-level noise 0.80, another patient's DRR 0.46, uniform
/// noise 0.06, a blank image 0.00.
pub const DEFAULT_MIN_SIMILARITY: f64 = 0.2;

/// How much better (coarse-level similarity) the X-ray mirrored left-right must fit for
/// the registration to be refused as flipped. On the abdomen CT at 64²: the right view
/// 0.98 and its mirror 0.74 (a body is nearly symmetric, so the margin stays small).
pub const MIRROR_MARGIN: f64 = 0.05;

/// Levels the mirrored X-ray is registered through: the global search and the first
/// refinement (the global level alone sees a ~32² detector, where left and right differ
/// little).
const MIRROR_CHECK_LEVELS: usize = 2;

impl RegistrationRequest {
    pub fn new(ct: &Path, xray: &Path) -> Self {
        Self {
            ct: ct.to_path_buf(),
            xray: xray.to_path_buf(),
            xray_frame: 0,
            extra_warnings: Vec::new(),
            labels: None,
            labels_table: None,
            mask_labels: Vec::new(),
            overlay: Vec::new(),
            plan: None,
            init_lao_deg: 0.0,
            init_cran_deg: 0.0,
            sid_mm: 1020.0,
            sod_mm: 850.0,
            pixel_mm: None,
            source_anterior: false,
            isocenter_lps: None,
            invert: false,
            similarity: Similarity::GradientNcc,
            levels_mm: DEFAULT_LEVELS_MM.to_vec(),
            seed: 1,
            gpu: false,
            min_similarity: DEFAULT_MIN_SIMILARITY,
            mirror_check: true,
            not_ct: NotCt::default(),
        }
    }
}

/// An input file with its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SizedInput {
    pub path: String,
    pub bytes: Option<u64>,
    /// SHA-256 of the file (of a DICOM folder: of its files in name order, names
    /// included), as every other report records its inputs.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// The nominal C-arm the registration started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NominalCArm {
    pub lao_deg: f64,
    pub cran_deg: f64,
    pub sid_mm: f64,
    pub sod_mm: f64,
    pub pixel_mm: f64,
    pub isocenter_lps: Vec3,
    pub source_anterior: bool,
}

/// `pose.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegistrationReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub lao_deg: f64,
    pub cran_deg: f64,
    pub roll_deg: f64,
    pub translation_mm: Vec3,
    pub rotation_deg: Vec3,
    pub center_lps: Vec3,
    /// Row-major 4×4, CT LPS mm → C-arm room LPS mm.
    pub matrix_lps: [[f64; 4]; 4],
    pub matrix_lps_meaning: String,
    pub similarity: f64,
    pub similarity_measure: Similarity,
    pub drrs_rendered: usize,
    pub drrs_per_second: f64,
    pub seconds: f64,
    pub polarity: Polarity,
    pub polarity_detected: bool,
    pub polarity_scores: Vec<(Polarity, f64)>,
    /// `cpu` or `gpu`.
    pub renderer: String,
    pub levels: Vec<LevelReport>,
    pub mask_label_ids: Vec<u16>,
    pub nominal: NominalCArm,
    pub label_table: String,
    pub inputs: Vec<SizedInput>,
    /// What the result must be read with (an overridden CT check); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub version: String,
    pub note: String,
}

versioned_report!(RegistrationReport, "registration", 1);

/// A registration with its overlay.
#[derive(Debug, Clone)]
pub struct RegistrationOutcome {
    pub report: RegistrationReport,
    /// The X-ray with the projected outlines and plan at the registered pose.
    pub overlay: RgbPicture,
}

/// Frame `frame` of the X-ray (PNG, DICOM or 2-D NIfTI, read by `pinhole-io`) as the
/// registration's image.
fn read_xray(path: &Path, frame: usize) -> Result<Image> {
    let image = pinhole_io::xray_image::read_frame(path, frame)?;
    Ok(Image {
        width: image.width,
        height: image.height,
        data: image.data,
    })
}

impl RegistrationRequest {
    /// Refuses parameters outside [`crate::limits`] (before any file is read).
    pub fn validate(&self) -> Result<()> {
        if self.levels_mm.is_empty() {
            return Err(Error::invalid("--levels-mm needs at least one voxel size"));
        }
        for &level_mm in &self.levels_mm {
            limits::REGISTER_LEVEL_MM.check(level_mm)?;
        }
        limits::check_carm(
            self.init_lao_deg,
            self.init_cran_deg,
            self.sid_mm,
            self.sod_mm,
        )?;
        if let Some(pixel_mm) = self.pixel_mm {
            limits::DRR_PIXEL_MM.check(pixel_mm)?;
        }
        limits::MIN_SIMILARITY.check(self.min_similarity)?;
        limits::check_finite_point("--isocenter", self.isocenter_lps)
    }
}

/// Refuses a registration whose best similarity stayed below `min_similarity`: a blank
/// or noise X-ray, or one of another body part, has no pose to report.
fn check_converged(similarity: f64, min_similarity: f64) -> Result<()> {
    if similarity.is_finite() && similarity >= min_similarity {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "registration did not converge: best similarity {similarity:.4} is below \
         {min_similarity} (--min-similarity); the X-ray may be blank, noise, or not of \
         this CT. No pose is returned."
    )))
}

/// Refuses an X-ray that fits better mirrored left-right (registered again on the mirrored
/// image through the global level and the first refinement, same start, schedule and
/// seed): it is most likely flipped, and its pose would be wrong with a plausible
/// similarity.
fn check_not_mirrored(
    xray: &Image,
    reg: &Registration,
    nominal: &Projection,
    start: &Pose,
    levels: &[(&dyn Renderer, LevelSpec)],
    settings: &Settings,
    observer: &dyn Observer,
) -> Result<()> {
    let checked = levels.len().min(MIRROR_CHECK_LEVELS);
    let Some(image_level) = checked.checked_sub(1).and_then(|k| reg.levels.get(k)) else {
        return Ok(());
    };
    let mirrored = mirror_left_right(xray);
    let m = register(&mirrored, nominal, start, &levels[..checked], settings)?;
    let level = format!(
        "similarity at level {checked} of {}, {}x{} detector",
        levels.len(),
        image_level.detector[0],
        image_level.detector[1]
    );
    if m.similarity > image_level.similarity + MIRROR_MARGIN {
        return Err(Error::invalid(format!(
            "registration did not converge: the X-ray mirrored left-right fits better \
             ({level}: {:.3} against {:.3}), so it is most likely flipped; no pose \
             was written. Check the image's orientation (the patient's right on the \
             viewer's left in the frontal view), or skip this check with --no-mirror-check",
            m.similarity, image_level.similarity
        )));
    }
    observer.info(&format!(
        "left-right check: the mirrored X-ray fits worse ({level}: {:.3} against {:.3})",
        m.similarity, image_level.similarity
    ));
    Ok(())
}

/// `image` with its columns in reverse order.
fn mirror_left_right(image: &Image) -> Image {
    let data = image
        .data
        .chunks_exact(image.width.max(1))
        .flat_map(|row| row.iter().rev().copied())
        .collect();
    Image {
        width: image.width,
        height: image.height,
        data,
    }
}

pub fn run(request: &RegistrationRequest, observer: &dyn Observer) -> Result<RegistrationOutcome> {
    request.validate()?;
    let xray = read_xray(&request.xray, request.xray_frame)?;
    observer.info(&format!(
        "X-ray {}{}: {}x{}",
        request.xray.display(),
        if request.xray_frame > 0 {
            format!(" frame {}", request.xray_frame)
        } else {
            String::new()
        },
        xray.width,
        xray.height
    ));
    let loaded = load(&request.ct, None, observer)?;
    let warnings: Vec<String> = request
        .extra_warnings
        .iter()
        .cloned()
        .chain(check_ct(&request.ct, &loaded, request.not_ct, observer)?)
        .collect();
    let ct = loaded.volume;
    let grid = ct.grid().clone();
    let ct_hu = ct.to_f32();
    drop(ct);
    let (table_name, table) = label_table(request.labels_table.as_deref())?;
    let labels = match &request.labels {
        Some(path) => {
            let l = load(path, None, observer)?.volume;
            require_same_grid(l.grid(), &grid, path)?;
            Some(labels_of(l, path)?)
        }
        None => None,
    };
    let mask_ids = match &labels {
        Some(l) if !request.mask_labels.is_empty() => {
            resolve_names(&request.mask_labels, &table, l)?
        }
        _ => Vec::new(),
    };
    let mask = labels
        .as_ref()
        .filter(|_| !mask_ids.is_empty())
        .map(|l| (l, mask_ids.as_slice()));
    let carm = nominal_carm(request, &grid, &xray);
    let nominal = carm.projection()?;
    let pyramid = mu_pyramid(&ct_hu, &Attenuation::default(), mask, &request.levels_mm)?;
    let renderers = renderers(request.gpu, pyramid, observer)?;
    let specs = default_levels(&request.levels_mm, carm.pixel_at_isocenter_mm());
    let levels: Vec<(&dyn Renderer, LevelSpec)> =
        renderers.iter().map(|r| r.as_ref()).zip(specs).collect();
    let settings = Settings {
        similarity: request.similarity,
        polarity: request.invert.then_some(Polarity::Inverted),
        seed: request.seed,
        ..Settings::default()
    };
    let start = Pose::identity(carm.isocenter_lps);
    let reg = register(&xray, &nominal, &start, &levels, &settings)?;
    check_converged(reg.similarity, request.min_similarity)?;
    if request.mirror_check {
        check_not_mirrored(&xray, &reg, &nominal, &start, &levels, &settings, observer)?;
    }
    let angles = CArmPose::from_pose(&reg.pose, &carm)?;
    observer.info(&format!(
        "registered in {:.1} s, {} DRRs ({:.0}/s): LAO {:.2}°, CRAN {:.2}°, table {:.1?} mm, similarity {:.4}",
        reg.seconds,
        reg.drrs_rendered,
        reg.drrs_per_second(),
        angles.lao_deg,
        angles.cran_deg,
        angles.translation_mm,
        reg.similarity
    ));
    let registered = reg.pose.projection(&nominal)?;
    let outlines = match &labels {
        Some(l) => outline_images(request, l, &table, &mask_ids, &registered)?,
        None => Vec::new(),
    };
    let lines = match &request.plan {
        Some(p) => plan_lines(&PlanPaths::read(p)?),
        None => Vec::new(),
    };
    let overlay = xray_overlay(
        &reg.polarity.apply(&xray),
        &outlines,
        &lines,
        &registered,
        carm.isocenter_lps,
    );
    let sized = |p: &Path| -> Result<SizedInput> {
        Ok(SizedInput {
            path: crate::provenance::recorded_path(p),
            bytes: std::fs::metadata(p).map(|m| m.len()).ok(),
            sha256: Some(crate::inputs::InputFile::of(p)?.sha256),
        })
    };
    let mut inputs = vec![sized(&request.ct)?, sized(&request.xray)?];
    if let Some(labels) = request.labels.as_deref() {
        inputs.push(sized(labels)?);
    }
    let report = RegistrationReport {
        schema_version: RegistrationReport::SCHEMA_VERSION,
        lao_deg: angles.lao_deg,
        cran_deg: angles.cran_deg,
        roll_deg: angles.roll_deg,
        translation_mm: angles.translation_mm,
        rotation_deg: reg.pose.rotation_deg,
        center_lps: reg.pose.center_lps,
        matrix_lps: reg.pose.matrix(),
        matrix_lps_meaning:
            "row-major 4x4, CT LPS mm -> C-arm room LPS mm (the CT's pose for the nominal C-arm)"
                .to_owned(),
        similarity: reg.similarity,
        similarity_measure: request.similarity,
        drrs_rendered: reg.drrs_rendered,
        drrs_per_second: reg.drrs_per_second(),
        seconds: reg.seconds,
        polarity: reg.polarity,
        polarity_detected: !request.invert,
        polarity_scores: reg.polarity_scores.clone(),
        renderer: if request.gpu { "gpu" } else { "cpu" }.to_owned(),
        levels: reg.levels.clone(),
        mask_label_ids: mask_ids,
        nominal: NominalCArm {
            lao_deg: request.init_lao_deg,
            cran_deg: request.init_cran_deg,
            sid_mm: request.sid_mm,
            sod_mm: request.sod_mm,
            pixel_mm: carm.detector.pixel_mm,
            isocenter_lps: carm.isocenter_lps,
            source_anterior: request.source_anterior,
        },
        label_table: table_name,
        inputs,
        warnings,
        version: VERSION.to_owned(),
        note: DISCLAIMER.to_owned(),
    };
    Ok(RegistrationOutcome { report, overlay })
}

/// The C-arm the X-ray was nominally taken with.
fn nominal_carm(request: &RegistrationRequest, grid: &pinhole_volume::Grid, xray: &Image) -> CArm {
    let mut carm = CArm::new(request.isocenter_lps.unwrap_or_else(|| grid.center_lps()));
    carm.lao_deg = request.init_lao_deg;
    carm.cran_deg = request.init_cran_deg;
    carm.sid_mm = request.sid_mm;
    carm.sod_mm = request.sod_mm;
    carm.source_anterior = request.source_anterior;
    carm.detector = Detector {
        width: xray.width,
        height: xray.height,
        pixel_mm: request.pixel_mm.unwrap_or(400.0 / xray.width as f64),
    };
    carm
}

/// One renderer per pyramid level, on the CPU or the GPU.
fn renderers(
    gpu: bool,
    pyramid: Vec<Volume<f32>>,
    observer: &dyn Observer,
) -> Result<Vec<Box<dyn Renderer>>> {
    if gpu {
        return gpu_renderers(pyramid, observer);
    }
    Ok(pyramid
        .into_iter()
        .map(|mu| Box::new(CpuRenderer::new(mu, None)) as Box<dyn Renderer>)
        .collect())
}

#[cfg(feature = "gpu")]
fn gpu_renderers(
    pyramid: Vec<Volume<f32>>,
    observer: &dyn Observer,
) -> Result<Vec<Box<dyn Renderer>>> {
    use crate::error::Context;
    let ctx = pinhole_gpu::GpuContext::new().context("--gpu: no usable GPU adapter")?;
    observer.info(&format!("GPU: {}", ctx.adapter_info()));
    Ok(pinhole_register::gpu_renderers(&ctx, &pyramid)?)
}

#[cfg(not(feature = "gpu"))]
fn gpu_renderers(
    _pyramid: Vec<Volume<f32>>,
    _observer: &dyn Observer,
) -> Result<Vec<Box<dyn Renderer>>> {
    Err(Error::invalid(
        "--gpu: this build has no GPU support (feature `gpu`)",
    ))
}

/// The projected structures outlined on the overlay, with their colours.
fn outline_images(
    request: &RegistrationRequest,
    labels: &Volume<u16>,
    table: &LabelTable,
    mask_ids: &[u16],
    registered: &Projection,
) -> Result<Vec<(Image, [u8; 3])>> {
    let ids = if !request.overlay.is_empty() {
        resolve_names(&request.overlay, table, labels)?
    } else if !mask_ids.is_empty() {
        mask_ids.to_vec()
    } else {
        largest_labels(labels, 8)
    };
    let images = pinhole_xray::project_labels(labels, &ids, registered);
    Ok(images
        .into_iter()
        .zip(&ids)
        .map(|(img, &id)| (img, table.color_of(u32::from(id))))
        .collect())
}

/// The `n` labels with the most voxels.
fn largest_labels(labels: &Volume<u16>, n: usize) -> Vec<u16> {
    let mut stats: Vec<_> = pinhole_volume::label_stats(labels).into_values().collect();
    stats.sort_by_key(|s| std::cmp::Reverse(s.voxels));
    stats
        .iter()
        .take(n)
        .filter_map(|s| u16::try_from(s.id).ok())
        .collect()
}

/// A needle plan's paths as lines: the best in yellow, the others in cyan.
pub fn plan_lines(plan: &PlanPaths) -> Vec<(Vec<Vec3>, [u8; 3])> {
    plan.paths
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let color = if n == 0 { [255, 220, 0] } else { [0, 200, 255] };
            (vec![p.entry_lps, p.target_lps], color)
        })
        .collect()
}

/// Label ids for names: exact names, else every label `name_*` present in the map.
pub fn resolve_names(
    names: &[String],
    table: &LabelTable,
    labels: &Volume<u16>,
) -> Result<Vec<u16>> {
    let present = pinhole_volume::label_stats(labels);
    let mut ids = Vec::new();
    for name in names {
        let name = name.trim();
        if let Some(id) = table.id_of(name) {
            ids.push(
                u16::try_from(id)
                    .ok()
                    .or_invalid(|| format!("label id {id} exceeds 65535"))?,
            );
            continue;
        }
        let prefix = format!("{name}_");
        let group: Vec<u16> = present
            .keys()
            .filter(|&&id| table.name(id).is_some_and(|n| n.starts_with(&prefix)))
            .filter_map(|&id| u16::try_from(id).ok())
            .collect();
        if group.is_empty() {
            return Err(Error::invalid(format!(
                "no label named {name:?} (nor {prefix}*) in the label table"
            )));
        }
        ids.extend(group);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

impl RegistrationOutcome {
    /// The files [`RegistrationOutcome::write`] puts in its folder.
    pub const FILES: [&'static str; 2] = ["pose.json", "overlay.png"];

    /// Writes `pose.json` and `overlay.png` into `out`.
    pub fn write(&self, out: &Path, observer: &dyn Observer) -> Result<()> {
        write_folder(out, "pose.json", &self.report, |out| {
            let overlay = out.join("overlay.png");
            write_picture(&overlay, &self.overlay)?;
            observer.info(&format!("wrote {}", overlay.display()));
            Ok(())
        })?;
        observer.info(&format!("wrote {}", out.join("pose.json").display()));
        Ok(())
    }
}

/// Why `similarity` did not parse.
pub fn parse_similarity(text: &str) -> Result<Similarity> {
    Similarity::parse(text).or_invalid(|| format!("--similarity: unknown measure {text:?}"))
}
