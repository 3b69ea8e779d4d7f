//! Control CT onto planning CT (`pinhole register-ct`): `ct_registration.json`
//! ([`CtRegistrationReport`]), `control_to_planning.tfm` (ITK; 3D Slicer and SimpleITK
//! read it) and `registration.png` (a checkerboard of the two scans). The same
//! registration serves the needle check ([`crate::verify`]) and the ablation
//! confirmation ([`crate::confirm`]).

use std::path::{Path, PathBuf};

use pinhole_intraop::deformable::{
    planning_to_control_point, register_deformable, BSplineField, DeformableResult,
    DeformableSettings,
};
use pinhole_intraop::rigid::{register_rigid, LevelSummary, RigidResult, RigidSettings};
use pinhole_volume::annotate::Canvas;
use pinhole_volume::math::{
    affine_inverse, distance, rotation_angle_deg, swap_lps_ras, transform_point, Mat4, Vec3,
    IDENTITY4,
};
use pinhole_volume::{dilate, Mask, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::figures::{write_picture, RgbPicture};
use crate::inputs::{
    load_checked_ct, load_named_labels, InputFile, NamedLabels, NotCt, UnnamedLabels,
};
use crate::observe::{step, Observer};
use crate::report::{unversioned, versioned_report, write_folder, Report, DISCLAIMER, VERSION};

/// How the control scan is brought into the planning frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Alignment {
    /// Rigid registration, optionally focused on an organ of the planning label map.
    Register {
        /// Planning label map and the organ to focus on (dilated by `organ_margin_mm`).
        organ: Option<OrganFocus>,
    },
    /// A known transform: a registration file (ITK `.tfm` or 4×4 text, Slicer's
    /// to-parent convention: control → planning).
    File(PathBuf),
    /// The scans share their frame (same acquisition or already resampled).
    Identity,
}

/// Registration restricted to an organ (with a margin) of the planning label map.
#[derive(Debug, Clone, PartialEq)]
pub struct OrganFocus {
    pub labels: PathBuf,
    pub labels_table: Option<String>,
    pub organ: String,
    pub margin_mm: f64,
    /// After the rigid registration, a B-spline deformation inside the organ (and margin).
    pub deformable: bool,
}

/// A control scan to bring onto the planning scan.
#[derive(Debug, Clone, PartialEq)]
pub struct CtRegistrationRequest {
    pub planning_ct: PathBuf,
    pub control_ct: PathBuf,
    pub alignment: Alignment,
    pub not_ct: NotCt,
}

/// How the control scan was placed in the planning frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ControlAlignment {
    /// `registered`, `file` or `identity`.
    pub method: String,
    /// Control LPS → planning LPS, row-major 4×4.
    pub control_to_planning_lps: Mat4,
    pub planning_to_control_lps: Mat4,
    pub rotation_deg: f64,
    /// How far the control scan's centre moves, mm.
    pub centre_shift_mm: f64,
    /// Final normalised cross-correlation (registered only).
    pub ncc: Option<f64>,
    /// Fraction of control samples inside the planning scan (registered only).
    pub overlap: Option<f64>,
    pub converged: bool,
    /// Why it did not converge.
    pub reason: Option<String>,
    /// The organ the registration focused on.
    pub organ: Option<String>,
    #[serde(default)]
    pub levels: Vec<LevelSummary>,
    pub method_detail: String,
    /// The deformable refinement, when asked for (`--deformable`).
    #[serde(default)]
    pub deformable: Option<DeformableSummary>,
}

/// What the B-spline refinement inside the organ found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeformableSummary {
    pub organ: String,
    /// Whether the deformation is used (else the rigid registration alone, with `reason`).
    pub used: bool,
    pub reason: Option<String>,
    pub grid_spacing_mm: f64,
    pub control_points: [usize; 3],
    /// NCC inside the organ region, rigid alone and with the deformation.
    pub ncc_rigid: Option<f64>,
    pub ncc: Option<f64>,
    /// Largest displacement the deformation can give, mm.
    pub max_displacement_mm: f64,
    /// Smallest Jacobian determinant over the organ samples (1 = no volume change).
    pub min_jacobian: f64,
    /// What the similarity left out, besides metal.
    pub excluded: Option<String>,
    pub levels: Vec<LevelSummary>,
    pub method_detail: String,
}

/// The files written beside `ct_registration.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CtRegistrationOutputs {
    pub transform: String,
    pub picture: String,
}

/// `ct_registration.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CtRegistrationReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub procedure: String,
    #[serde(flatten)]
    pub alignment: ControlAlignment,
    pub outputs: CtRegistrationOutputs,
    pub inputs: Vec<InputFile>,
    pub version: String,
    pub note: String,
    #[serde(default)]
    pub warnings: Vec<String>,
}

versioned_report!(CtRegistrationReport, "ct-registration", 1);

/// A registration with its picture.
#[derive(Debug, Clone)]
pub struct CtRegistrationOutcome {
    pub report: CtRegistrationReport,
    pub picture: RgbPicture,
    /// The deformation in use (planning frame), if any.
    pub field: Option<BSplineField>,
}

/// The scans loaded and aligned (what the needle check and the confirmation use).
pub struct AlignedScans {
    pub planning: Volume<f32>,
    pub control: Volume<f32>,
    pub alignment: ControlAlignment,
    pub warnings: Vec<String>,
    /// The organ region (planning frame) when a deformable refinement was asked for and
    /// has not run yet ([`AlignedScans::refine_deformable`]).
    pending_deformable: Option<(String, Mask)>,
    /// The deformation in use (planning frame), when the refinement succeeded.
    pub field: Option<BSplineField>,
}

impl AlignedScans {
    /// Whether a deformable refinement was asked for and is still to run.
    pub fn deformable_pending(&self) -> bool {
        self.pending_deformable.is_some()
    }

    /// Planning point → control point: the rigid transform after the deformation, if any.
    pub fn planning_to_control(&self, p: Vec3) -> Vec3 {
        planning_to_control_point(
            &self.alignment.planning_to_control_lps,
            self.field.as_ref(),
            p,
        )
    }

    /// Runs the deformable refinement asked for (nothing otherwise): a B-spline
    /// deformation inside the organ region, on top of the converged rigid registration.
    /// `exclude` (control frame, described by `excluded`): voxels the similarity must not
    /// use, e.g. the ablation zone. A deformation that is not usable is reported with its
    /// reason and a warning, and the rigid registration stays in use.
    pub fn refine_deformable(
        &mut self,
        exclude: Option<(Mask, &str)>,
        observer: &dyn Observer,
    ) -> Result<()> {
        let Some((organ_name, organ)) = self.pending_deformable.take() else {
            return Ok(());
        };
        if !self.alignment.converged {
            return Ok(());
        }
        let excluded = exclude.as_ref().map(|(_, what)| (*what).to_owned());
        let settings = DeformableSettings {
            exclude_control: exclude.map(|(mask, _)| mask),
            ..DeformableSettings::default()
        };
        let result = step(
            observer,
            "registering the organ (B-spline deformation)",
            || {
                register_deformable(
                    &self.planning,
                    &self.control,
                    &self.alignment.planning_to_control_lps,
                    &organ,
                    &settings,
                )
            },
        )?;
        if let Some(reason) = &result.reason {
            let warning = format!(
                "deformable registration not used ({reason}); the rigid registration is used"
            );
            observer.warn(&warning);
            self.warnings.push(warning);
        }
        let summary = deformable_summary(&result, organ_name, excluded, &settings);
        self.alignment.method_detail.push_str(if result.converged {
            "; then a cubic B-spline deformation inside the organ region (pinhole_intraop::deformable)"
        } else {
            "; the B-spline deformation asked for was not usable (see deformable.reason)"
        });
        self.alignment.deformable = Some(summary);
        if result.converged {
            self.field = Some(result.field);
        }
        Ok(())
    }

    /// Refuses to go on from a registration that did not converge: `scans` names the two
    /// scans ("the control scan onto the planning scan"), `withheld` what is not reported.
    pub fn require_converged(&self, scans: &str, withheld: &str) -> Result<()> {
        match &self.alignment.reason {
            Some(reason) => Err(Error::invalid(format!(
                "could not register {scans} ({reason}); {withheld}. Check the scans, or give a transform with --registration"
            ))),
            None => Ok(()),
        }
    }
}

/// The registration file or organ label map an alignment read, as reports record it.
pub fn alignment_input(alignment: &Alignment) -> Result<Option<InputFile>> {
    Ok(match alignment {
        Alignment::File(p) => Some(InputFile::with_role("registration", p)?),
        Alignment::Register { organ: Some(o) } => Some(InputFile::with_role("labels", &o.labels)?),
        _ => None,
    })
}

/// Loads both scans and aligns the control scan. A registration that did not converge
/// is returned as such (`alignment.converged == false`); callers decide.
pub fn load_and_align(
    request: &CtRegistrationRequest,
    observer: &dyn Observer,
) -> Result<AlignedScans> {
    // Both scans are read side by side (decompression is single-threaded per file).
    let (planning, control) = rayon::join(
        || load_checked_ct(&request.planning_ct, request.not_ct, observer),
        || load_checked_ct(&request.control_ct, request.not_ct, observer),
    );
    let ((planning, w1), (control, w2)) = (planning?, control?);
    let mut warnings: Vec<String> = w1.into_iter().chain(w2).collect();
    let centre = control.grid().center_lps();
    let mut deformable_organ = None;
    let alignment = match &request.alignment {
        Alignment::Identity => fixed_alignment(
            "identity",
            IDENTITY4,
            centre,
            "the scans share their frame (no registration)",
        )?,
        Alignment::File(path) => {
            let ras = pinhole_io::transform::read_registration(path)?;
            fixed_alignment(
                "file",
                swap_lps_ras(&ras),
                centre,
                &format!(
                    "transform read from {}",
                    crate::provenance::recorded_path(path)
                ),
            )?
        }
        Alignment::Register { organ } => {
            let mask = match organ {
                Some(focus) => Some(organ_mask(focus, &planning, observer, &mut warnings)?),
                None => None,
            };
            // Kept only when the deformable step will need it (a CT-sized mask).
            if organ.as_ref().is_some_and(|o| o.deformable) {
                deformable_organ = mask.clone();
            }
            register_loaded(
                &planning,
                &control,
                mask,
                organ.as_ref().map(|o| o.organ.clone()),
                observer,
            )?
        }
    };
    if let Some(reason) = &alignment.reason {
        let warning = format!("registration did not converge: {reason}");
        observer.warn(&warning);
        warnings.push(warning);
    }
    let pending_deformable = match (&request.alignment, deformable_organ) {
        (Alignment::Register { organ: Some(focus) }, Some(mask)) if focus.deformable => {
            Some((focus.organ.clone(), mask))
        }
        _ => None,
    };
    Ok(AlignedScans {
        planning,
        control,
        alignment,
        warnings,
        pending_deformable,
        field: None,
    })
}

fn deformable_summary(
    result: &DeformableResult,
    organ: String,
    excluded: Option<String>,
    settings: &DeformableSettings,
) -> DeformableSummary {
    let finite = |v: f64| v.is_finite().then_some(v);
    DeformableSummary {
        organ,
        used: result.converged,
        reason: result.reason.clone(),
        grid_spacing_mm: result.field.spacing_mm(),
        control_points: result.field.dims(),
        ncc_rigid: finite(result.ncc_rigid),
        ncc: finite(result.ncc),
        max_displacement_mm: result.max_displacement_mm,
        min_jacobian: result.min_jacobian,
        excluded,
        levels: result.levels.clone(),
        method_detail: format!(
            "cubic B-spline free-form deformation (ITK BSplineTransform convention) over the organ region's box, control points every {} mm at the end (levels: {}), normalised cross-correlation on HU clamped to [{}, {}] over planning samples in the organ region, metal and 4 mm around it excluded, regular-step gradient ascent with the gradient smoothed over the control grid; refused when it folds (Jacobian < {}), moves more than {} mm or lowers the similarity",
            result.field.spacing_mm(),
            settings
                .levels
                .iter()
                .map(|l| match l.image_mm {
                    Some(i) => format!("{i} mm images / {} mm grid", l.grid_mm),
                    None => format!("the scans / {} mm grid", l.grid_mm),
                })
                .collect::<Vec<_>>()
                .join(", "),
            settings.clamp_hu.0,
            settings.clamp_hu.1,
            settings.min_jacobian,
            settings.max_displacement_mm
        ),
    }
}

/// A known alignment; `centre`: the control scan's centre (LPS), whose shift is reported.
fn fixed_alignment(
    method: &str,
    control_to_planning: Mat4,
    centre: Vec3,
    detail: &str,
) -> Result<ControlAlignment> {
    let inverse = affine_inverse(&control_to_planning)
        .ok_or_else(|| Error::invalid("the control-to-planning transform is singular"))?;
    Ok(ControlAlignment {
        method: method.to_owned(),
        control_to_planning_lps: control_to_planning,
        planning_to_control_lps: inverse,
        rotation_deg: rotation_angle_deg(&control_to_planning),
        centre_shift_mm: distance(transform_point(&control_to_planning, centre), centre),
        ncc: None,
        overlap: None,
        converged: true,
        reason: None,
        organ: None,
        levels: Vec::new(),
        method_detail: detail.to_owned(),
        deformable: None,
    })
}

/// Registers a loaded control scan onto a loaded planning scan (rigid; with
/// `planning_mask`, only that region counts). The result may say it did not converge.
pub fn register_loaded(
    planning: &Volume<f32>,
    control: &Volume<f32>,
    planning_mask: Option<Mask>,
    organ: Option<String>,
    observer: &dyn Observer,
) -> Result<ControlAlignment> {
    let settings = RigidSettings {
        planning_mask,
        ..RigidSettings::default()
    };
    let result = step(observer, "registering the control scan (rigid)", || {
        register_rigid(planning, control, &settings)
    })?;
    Ok(registered(&result, organ))
}

fn registered(result: &RigidResult, organ: Option<String>) -> ControlAlignment {
    ControlAlignment {
        method: "registered".to_owned(),
        control_to_planning_lps: result.control_to_planning,
        planning_to_control_lps: affine_inverse(&result.control_to_planning).unwrap_or(IDENTITY4),
        rotation_deg: result.rotation_deg,
        centre_shift_mm: result.centre_shift_mm,
        ncc: Some(result.ncc),
        overlap: Some(result.overlap),
        converged: result.converged,
        reason: result.reason.clone(),
        organ,
        levels: result.levels.clone(),
        deformable: None,
        method_detail: "rigid, multi-resolution (box-averaged 6 and 3 mm levels, then the scans), normalised cross-correlation on HU clamped to [-1000, 1900], metal (>= 2000 HU) and 4 mm around it excluded, coarse translation search, regular-step gradient ascent, robust Gauss-Newton polish (pinhole_intraop::rigid)".to_owned(),
    }
}

/// The organ of the planning labels, dilated: where the registration looks.
fn organ_mask(
    focus: &OrganFocus,
    planning: &Volume<f32>,
    observer: &dyn Observer,
    warnings: &mut Vec<String>,
) -> Result<Mask> {
    let NamedLabels { labels, table, .. } = load_named_labels(
        &focus.labels,
        focus.labels_table.as_deref(),
        UnnamedLabels::Forbid,
        observer,
    )?;
    crate::inputs::require_same_grid(labels.grid(), planning.grid(), &focus.labels)?;
    let id = table.id_of(&focus.organ).ok_or_else(|| {
        Error::invalid(format!(
            "--organ {:?} is not in the label table",
            focus.organ
        ))
    })?;
    let mask = labels.map(|v| u32::from(v) == id);
    if !mask.data().iter().any(|&b| b) {
        return Err(Error::invalid(format!(
            "--organ {:?} has no voxel in the label map",
            focus.organ
        )));
    }
    let sides = mask.scan_edges_touched();
    if let Some(w) = crate::inputs::scan_edge_warning(&format!("organ {}", focus.organ), &sides) {
        observer.warn(&w);
        warnings.push(w);
    }
    Ok(dilate(&mask, focus.margin_mm))
}

/// Registers the control scan and makes the checkerboard picture.
pub fn run(
    request: &CtRegistrationRequest,
    observer: &dyn Observer,
) -> Result<CtRegistrationOutcome> {
    // The inputs are hashed while the scans are read and registered.
    let (scans, inputs) = rayon::join(
        || load_and_align(request, observer),
        || -> Result<Vec<InputFile>> {
            let mut inputs = vec![
                InputFile::with_role("planning_ct", &request.planning_ct)?,
                InputFile::with_role("control_ct", &request.control_ct)?,
            ];
            inputs.extend(alignment_input(&request.alignment)?);
            Ok(inputs)
        },
    );
    let (mut scans, inputs) = (scans?, inputs?);
    scans.refine_deformable(None, observer)?;
    let picture = checkerboard(&scans);
    let report = CtRegistrationReport {
        schema_version: CtRegistrationReport::SCHEMA_VERSION,
        procedure: "control CT to planning CT".to_owned(),
        alignment: scans.alignment.clone(),
        outputs: CtRegistrationOutputs {
            transform: "control_to_planning.tfm".to_owned(),
            picture: "registration.png".to_owned(),
        },
        inputs,
        version: VERSION.to_owned(),
        note: DISCLAIMER.to_owned(),
        warnings: scans.warnings.clone(),
    };
    Ok(CtRegistrationOutcome {
        report,
        picture,
        field: scans.field,
    })
}

impl CtRegistrationOutcome {
    pub const FILES: [&'static str; 3] = [
        "control_to_planning.tfm",
        "registration.png",
        "ct_registration.json",
    ];

    pub fn write(&self, out: &Path) -> Result<()> {
        write_folder(out, "ct_registration.json", &self.report, |out| {
            write_transform_with(
                &out.join("control_to_planning.tfm"),
                &self.report.alignment,
                self.field.as_ref(),
            )?;
            write_picture(&out.join("registration.png"), &self.picture)
        })
    }
}

impl CtRegistrationReport {
    pub fn summary(&self) -> Vec<String> {
        alignment_summary(&self.alignment)
    }
}

/// What the terminal says of an alignment.
pub fn alignment_summary(a: &ControlAlignment) -> Vec<String> {
    let mut lines = vec![format!(
        "control scan {}: rotation {:.1}°, centre moved {:.1} mm{}",
        match a.method.as_str() {
            "registered" => "registered",
            "file" => "placed by the given transform",
            _ => "taken in the planning frame",
        },
        a.rotation_deg,
        a.centre_shift_mm,
        match (a.ncc, a.overlap) {
            (Some(n), Some(o)) => format!(" (NCC {n:.3}, {:.0} % overlap)", o * 100.0),
            _ => String::new(),
        }
    )];
    if let Some(reason) = &a.reason {
        lines.push(format!("NOT CONVERGED: {reason}"));
    }
    if let Some(d) = &a.deformable {
        lines.push(match (&d.reason, d.ncc_rigid, d.ncc) {
            (None, Some(before), Some(after)) => format!(
                "{} deformed (B-spline, {} mm grid): NCC {before:.3} -> {after:.3}, up to {:.1} mm, Jacobian >= {:.2}",
                d.organ, d.grid_spacing_mm, d.max_displacement_mm, d.min_jacobian
            ),
            (reason, _, _) => format!(
                "deformable registration NOT used: {}",
                reason.as_deref().unwrap_or("no result")
            ),
        });
    }
    lines
}

/// Writes the alignment as an ITK transform for Slicer (control → planning): affine,
/// or with `field`, a composite of the rigid transform and the B-spline deformation.
pub fn write_transform_with(
    path: &Path,
    alignment: &ControlAlignment,
    field: Option<&BSplineField>,
) -> Result<()> {
    let comment = "Pinhole: control CT -> planning CT (apply to the control scan in 3D Slicer). Not for clinical use.";
    match field {
        None => pinhole_io::transform::write_itk_transform(
            path,
            &alignment.control_to_planning_lps,
            comment,
        )?,
        Some(field) => {
            let spacing = field.spacing_mm();
            pinhole_io::transform::write_itk_bspline_transform(
                path,
                &alignment.control_to_planning_lps,
                &pinhole_io::transform::ItkBSpline {
                    dims: field.dims(),
                    origin_lps: field.origin_lps(),
                    spacing_mm: [spacing; 3],
                    direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                    coefficients_mm: field.coefficients_mm(),
                },
                comment,
            )?
        }
    }
    Ok(())
}

/// Axial checkerboard (planning / registered control, 16 mm squares) through the control
/// scan's centre, in the planning frame; radiological view with orientation letters.
fn checkerboard(scans: &AlignedScans) -> RgbPicture {
    let size = 384usize;
    let pixel_mm = 0.75;
    let centre = transform_point(
        &scans.alignment.control_to_planning_lps,
        scans.control.grid().center_lps(),
    );
    let half = size as f64 * pixel_mm / 2.0;
    let mut rgb = vec![0u8; size * size * 3];
    for r in 0..size {
        for c in 0..size {
            // Radiological: x (LPS, toward the patient's left) grows to the right, so the
            // patient's right is on the viewer's left; anterior at the top.
            let x = centre[0] - half + (c as f64 + 0.5) * pixel_mm;
            let y = centre[1] - half + (r as f64 + 0.5) * pixel_mm;
            let p = [x, y, centre[2]];
            let square = ((c as f64 * pixel_mm / 16.0) as usize
                + (r as f64 * pixel_mm / 16.0) as usize)
                .is_multiple_of(2);
            let hu = if square {
                scans.planning.sample_trilinear(p)
            } else {
                scans.control.sample_trilinear(scans.planning_to_control(p))
            };
            let o = (r * size + c) * 3;
            match hu {
                Some(hu) => {
                    let g = (((hu + 160.0) / 400.0).clamp(0.0, 1.0) * 255.0) as u8;
                    let tint = if square {
                        [g, g, g]
                    } else {
                        [g, (f64::from(g) * 0.85) as u8, (f64::from(g) * 0.6) as u8]
                    };
                    rgb[o..o + 3].copy_from_slice(&tint);
                }
                None => rgb[o..o + 3].copy_from_slice(&[0, 0, 40]),
            }
        }
    }
    let mut canvas = Canvas {
        rgb: &mut rgb,
        width: size,
        height: size,
    };
    canvas.orientation_letters([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
    canvas.scale_bar(pixel_mm);
    RgbPicture {
        width: size,
        height: size,
        rgb,
    }
}
