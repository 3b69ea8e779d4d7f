//! The needle in a control CT against the plan (`pinhole verify needle`):
//! `needle_check.json` ([`NeedleCheckReport`]), `needle_check.png` and
//! `needle_check.mrk.json` (planned line, detected needle and correction, for 3D Slicer).
//!
//! The control scan is registered onto the planning scan ([`crate::control_ct`]); the
//! needle is found in the control scan ([`pinhole_intraop::needle`]) with the plan's
//! direction as a hint, and mapped into the planning frame, where it is measured against
//! the plan's best path: tip to target, the miss at the target's depth, the angle, what
//! the current line would cross, and a correction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pinhole_ablation::coverage::patient_side;
use pinhole_intraop::deformable::{control_to_planning_point, BSplineField};
use pinhole_intraop::needle::{
    detect_needle, DetectedNeedle, NeedleDetection, NeedleSearch, SCAN_EDGE, STEEPEST_EDGE,
};
use pinhole_io::markups::{ControlPoint, Markup, MarkupKind};
use pinhole_volume::annotate::Canvas;
use pinhole_volume::math::{
    add, dot, norm, scale, sub, transform_direction, transform_point, Vec3,
};
use pinhole_volume::Volume;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::control_ct::{load_and_align, Alignment, ControlAlignment, CtRegistrationRequest};
use crate::error::{Error, Result};
use crate::figures::{write_picture, RgbPicture};
use crate::inputs::{load_named_labels, InputFile, NotCt, UnnamedLabels};
use crate::needle::PlanPaths;
use crate::observe::{step, Observer};
use crate::report::{unversioned, versioned_report, write_folder, Report, DISCLAIMER, VERSION};

/// Within this distance of the target the needle is on target, mm.
pub const ON_TARGET_MM: f64 = 3.0;
/// A re-angled needle is withdrawn to this depth below the skin, mm.
pub const PIVOT_DEPTH_MM: f64 = 15.0;

/// A control scan to check.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedleCheckRequest {
    pub plan: PathBuf,
    pub planning_ct: PathBuf,
    pub control_ct: PathBuf,
    /// The planning label map: what the needle's line would cross.
    pub labels: Option<PathBuf>,
    pub labels_table: Option<String>,
    pub alignment: Alignment,
    pub not_ct: NotCt,
}

/// The needle found, in both frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FoundNeedle {
    /// As found in the control scan (its own frame).
    pub in_control: DetectedNeedle,
    pub tip_planning_lps: Vec3,
    pub hub_end_planning_lps: Vec3,
    /// Unit, hub → tip, planning frame.
    pub axis_planning_lps: Vec3,
}

/// A structure the needle's line enters ahead of the tip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Crossing {
    pub name: String,
    /// From the tip along the needle, mm.
    pub distance_from_tip_mm: f64,
}

/// The needle against the plan (planning frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NeedleMetrics {
    pub tip_to_target_mm: f64,
    /// Distance from the target to the needle's extended line (the miss at the target's
    /// depth if it were advanced as it is).
    pub miss_at_target_depth_mm: f64,
    /// Distance of the tip from the planned line.
    pub tip_off_plan_mm: f64,
    /// Angle between the needle and the planned path.
    pub angle_to_plan_deg: f64,
    /// Along the needle from the tip to the point closest to the target (negative: the
    /// tip is past it).
    pub depth_remaining_mm: f64,
    /// The label the tip lies in (`null`: unlabelled tissue, or no label map).
    pub tip_in: Option<String>,
    /// Labels the needle's line enters from the tip to the target's depth + 10 mm (the
    /// target's own label included), nearest first; empty without labels.
    pub crossings_ahead: Vec<Crossing>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Correction {
    /// `on_target`, `advance`, `withdraw` or `redirect`.
    pub action: String,
    pub text: String,
    /// Withdraw by this much first (redirect, withdraw), mm.
    pub withdraw_mm: Option<f64>,
    /// Re-angle by this much (redirect), degrees.
    pub reangle_deg: Option<f64>,
    /// Toward this patient side (redirect).
    pub reangle_toward: Option<String>,
    /// Then advance this much (advance, redirect), mm.
    pub advance_mm: Option<f64>,
    /// The point the needle is pulled back to (redirect, withdraw), planning LPS.
    pub pivot_lps: Option<Vec3>,
}

/// `needle_check.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NeedleCheckReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub procedure: String,
    pub registration: ControlAlignment,
    pub plan_entry_lps: Vec3,
    pub plan_target_lps: Vec3,
    pub found: bool,
    /// Why no needle was reported (`found == false`).
    pub not_found_reason: Option<String>,
    pub needle: Option<FoundNeedle>,
    pub metrics: Option<NeedleMetrics>,
    pub correction: Option<Correction>,
    pub outputs: Vec<String>,
    pub inputs: Vec<InputFile>,
    pub version: String,
    pub note: String,
    #[serde(default)]
    pub warnings: Vec<String>,
}

versioned_report!(NeedleCheckReport, "needle-check", 1);

/// A needle check with its picture and markups.
#[derive(Debug, Clone)]
pub struct NeedleCheckOutcome {
    pub report: NeedleCheckReport,
    pub picture: RgbPicture,
    pub markups: Vec<Markup>,
    /// The deformation in use (planning frame), if any: written into the `.tfm`.
    pub field: Option<BSplineField>,
}

/// Checks the needle.
pub fn run(request: &NeedleCheckRequest, observer: &dyn Observer) -> Result<NeedleCheckOutcome> {
    let plan = PlanPaths::read(&request.plan)?;
    let path = plan.paths.first().ok_or_else(|| {
        Error::invalid(format!("{}: the plan has no path", request.plan.display()))
    })?;
    let (entry, target) = (path.entry_lps, path.target_lps);
    // Before the scans are read: a degenerate plan line is refused at once.
    if unit(sub(target, entry)).is_none() {
        return Err(Error::invalid("the plan's entry and target coincide"));
    }
    let mut scans = load_and_align(
        &CtRegistrationRequest {
            planning_ct: request.planning_ct.clone(),
            control_ct: request.control_ct.clone(),
            alignment: request.alignment.clone(),
            not_ct: request.not_ct,
        },
        observer,
    )?;
    scans.require_converged(
        "the control scan onto the planning scan",
        "the needle is not measured against the plan",
    )?;
    // Metal (and 4 mm around it) is left out of the deformable similarity already.
    scans.refine_deformable(None, observer)?;
    let labels = match &request.labels {
        Some(p) => {
            let named = load_named_labels(
                p,
                request.labels_table.as_deref(),
                UnnamedLabels::Forbid,
                observer,
            )?;
            let names: BTreeMap<u32, String> = named
                .table
                .iter()
                .map(|(id, e)| (id, e.name.clone()))
                .collect();
            Some((named.labels, names))
        }
        None => None,
    };
    let findings = check_needle(
        &scans.planning,
        &scans.control,
        (&scans.alignment, scans.field.as_ref()),
        (entry, target),
        labels.as_ref().map(|(l, names)| (l, names)),
        observer,
    )?;
    let mut warnings = scans.warnings.clone();
    warnings.extend(findings.warnings.iter().cloned());
    let NeedleFindings {
        found,
        not_found_reason: reason,
        needle,
        metrics,
        correction,
        ..
    } = findings;
    let picture = check_picture(
        &scans.planning,
        entry,
        target,
        needle.as_ref(),
        correction.as_ref(),
    );
    let markups = markups(entry, target, needle.as_ref(), correction.as_ref());
    let mut inputs = vec![
        InputFile::with_role("plan", &request.plan)?,
        InputFile::with_role("planning_ct", &request.planning_ct)?,
        InputFile::with_role("control_ct", &request.control_ct)?,
    ];
    if let Some(l) = &request.labels {
        inputs.push(InputFile::with_role("labels", l)?);
    }
    if let Alignment::File(p) = &request.alignment {
        inputs.push(InputFile::with_role("registration", p)?);
    }
    let report = NeedleCheckReport {
        schema_version: NeedleCheckReport::SCHEMA_VERSION,
        procedure: "control CT needle check".to_owned(),
        registration: scans.alignment.clone(),
        plan_entry_lps: entry,
        plan_target_lps: target,
        found,
        not_found_reason: reason,
        needle,
        metrics,
        correction,
        outputs: NeedleCheckOutcome::FILES[..3].iter().map(|s| (*s).to_owned()).collect(),
        inputs,
        version: VERSION.to_owned(),
        note: format!("{DISCLAIMER} Check the detected needle on the control scan before acting on the correction."),
        warnings,
    };
    Ok(NeedleCheckOutcome {
        report,
        picture,
        markups,
        field: scans.field,
    })
}

/// What a control scan says of the needle (planning frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NeedleFindings {
    pub found: bool,
    pub not_found_reason: Option<String>,
    pub needle: Option<FoundNeedle>,
    pub metrics: Option<NeedleMetrics>,
    pub correction: Option<Correction>,
    /// Also sent to the observer.
    pub warnings: Vec<String>,
}

/// Finds the needle in a loaded control scan aligned by `alignment` (rigid, and a
/// deformation in the planning frame when given: the tip and the hub end are brought
/// across through its inverse) and measures it against the plan line `(entry, target)`
/// (planning LPS); with `labels` (planning label map and its table), what the needle's
/// line would cross. Used by `verify needle` and by
/// the guidance server for an uploaded control scan.
pub fn check_needle(
    planning: &Volume<f32>,
    control: &Volume<f32>,
    (alignment, field): (&ControlAlignment, Option<&BSplineField>),
    (entry, target): (Vec3, Vec3),
    labels: Option<(&Volume<u16>, &BTreeMap<u32, String>)>,
    observer: &dyn Observer,
) -> Result<NeedleFindings> {
    let planned_axis = unit(sub(target, entry))
        .ok_or_else(|| Error::invalid("the plan's entry and target coincide"))?;
    let mut warnings = Vec::new();
    let to_control = alignment.planning_to_control_lps;
    let path_length = norm(sub(target, entry));
    let search = NeedleSearch {
        expected_axis_lps: unit(transform_direction(&to_control, planned_axis)),
        near_lps: Some((transform_point(&to_control, target), path_length + 30.0)),
        ..NeedleSearch::default()
    };
    let detection = step(observer, "finding the needle in the control scan", || {
        detect_needle(control, &search)
    })?;
    if labels.is_none() {
        warnings.push(
            "no planning label map: the structures ahead of the needle were not checked".to_owned(),
        );
    }
    let findings = match detection {
        NeedleDetection::NotFound { reason } => {
            warnings.push(format!("no needle found in the control scan: {reason}"));
            NeedleFindings {
                found: false,
                not_found_reason: Some(reason),
                needle: None,
                metrics: None,
                correction: None,
                warnings,
            }
        }
        NeedleDetection::Found(d) => {
            let to_planning = alignment.control_to_planning_lps;
            let mut across = |y: Vec3| {
                control_to_planning_point(&to_planning, field, y).unwrap_or_else(|| {
                    warnings.push(format!(
                        "the deformation could not be inverted at {y:.1?} (control scan): the rigid registration places that point"
                    ));
                    transform_point(&to_planning, y)
                })
            };
            let tip_planning_lps = across(d.tip_lps);
            // The axis through the deformation: from a point 10 mm back to the tip.
            let behind = across(sub(d.tip_lps, scale(d.axis_lps, 10.0)));
            let rigid_axis =
                unit(transform_direction(&to_planning, d.axis_lps)).unwrap_or(d.axis_lps);
            let axis = unit(sub(tip_planning_lps, behind)).unwrap_or(rigid_axis);
            let needle = FoundNeedle {
                tip_planning_lps,
                hub_end_planning_lps: across(d.hub_end_lps),
                axis_planning_lps: axis,
                in_control: d,
            };
            if needle.in_control.confidence < 0.5 {
                warnings.push(format!(
                    "the needle was found with low confidence ({:.2}): check it on the control scan",
                    needle.in_control.confidence
                ));
            }
            warnings.extend(tip_warning(&needle.in_control.tip_method));
            let (tip_in, crossings) = labels
                .map(|(l, t)| crossings_ahead(&needle, target, l, t))
                .unwrap_or_default();
            let metrics = measure(&needle, entry, target, tip_in, crossings);
            let correction = correct(&needle, &metrics, target, planning);
            NeedleFindings {
                found: true,
                not_found_reason: None,
                needle: Some(needle),
                metrics: Some(metrics),
                correction: Some(correction),
                warnings,
            }
        }
    };
    for w in &findings.warnings {
        observer.warn(w);
    }
    Ok(findings)
}

/// `v` normalised; `None` when shorter than a nanometre (a degenerate line) or not finite.
fn unit(v: Vec3) -> Option<Vec3> {
    let n = norm(v);
    (n > 1e-9 && n.is_finite()).then(|| scale(v, 1.0 / n))
}

fn measure(
    needle: &FoundNeedle,
    entry: Vec3,
    target: Vec3,
    tip_in: Option<String>,
    crossings: Vec<Crossing>,
) -> NeedleMetrics {
    let tip = needle.tip_planning_lps;
    let axis = needle.axis_planning_lps;
    let planned = unit(sub(target, entry)).unwrap_or(axis);
    let to_target = sub(target, tip);
    let along = dot(to_target, axis);
    let miss = norm(sub(to_target, scale(axis, along)));
    let tip_from_entry = sub(tip, entry);
    let off_plan = norm(sub(
        tip_from_entry,
        scale(planned, dot(tip_from_entry, planned)),
    ));
    NeedleMetrics {
        tip_to_target_mm: norm(to_target),
        miss_at_target_depth_mm: miss,
        tip_off_plan_mm: off_plan,
        angle_to_plan_deg: dot(axis, planned).clamp(-1.0, 1.0).acos().to_degrees(),
        depth_remaining_mm: along,
        tip_in,
        crossings_ahead: crossings,
    }
}

/// Labels entered along the needle's line from the tip to 10 mm past the target's depth.
fn crossings_ahead(
    needle: &FoundNeedle,
    target: Vec3,
    labels: &Volume<u16>,
    names: &BTreeMap<u32, String>,
) -> (Option<String>, Vec<Crossing>) {
    let tip = needle.tip_planning_lps;
    let axis = needle.axis_planning_lps;
    let reach = dot(sub(target, tip), axis).max(0.0) + 10.0;
    let step_mm = 0.5;
    let mut seen: Vec<Crossing> = Vec::new();
    let name_of = |v: u16| {
        names
            .get(&u32::from(v))
            .cloned()
            .unwrap_or_else(|| format!("unnamed_label_{v}"))
    };
    let mut previous = labels.sample_nearest(tip).unwrap_or(0);
    let tip_in = (previous != 0).then(|| name_of(previous));
    for s in 1..=(reach / step_mm) as usize {
        let d = s as f64 * step_mm;
        let v = labels.sample_nearest(add(tip, scale(axis, d))).unwrap_or(0);
        if v != 0 && v != previous {
            let name = name_of(v);
            if !seen.iter().any(|c| c.name == name) {
                seen.push(Crossing {
                    name,
                    distance_from_tip_mm: d,
                });
            }
        }
        previous = v;
    }
    (tip_in, seen)
}

/// The correction: on target, advance, withdraw, or withdraw to a pivot under the skin
/// and re-angle toward the target.
fn correct(
    needle: &FoundNeedle,
    m: &NeedleMetrics,
    target: Vec3,
    planning: &Volume<f32>,
) -> Correction {
    let none = Correction {
        action: String::new(),
        text: String::new(),
        withdraw_mm: None,
        reangle_deg: None,
        reangle_toward: None,
        advance_mm: None,
        pivot_lps: None,
    };
    if m.tip_to_target_mm <= ON_TARGET_MM {
        return Correction {
            action: "on_target".to_owned(),
            text: format!(
                "on target: tip {:.1} mm from the target",
                m.tip_to_target_mm
            ),
            ..none
        };
    }
    if m.miss_at_target_depth_mm <= ON_TARGET_MM {
        return if m.depth_remaining_mm > 0.0 {
            Correction {
                action: "advance".to_owned(),
                text: format!(
                    "advance {:.0} mm along the current line (it passes {:.1} mm from the target)",
                    m.depth_remaining_mm, m.miss_at_target_depth_mm
                ),
                advance_mm: Some(m.depth_remaining_mm),
                ..none
            }
        } else {
            Correction {
                action: "withdraw".to_owned(),
                text: format!(
                    "withdraw {:.0} mm: the tip is past the target",
                    -m.depth_remaining_mm
                ),
                withdraw_mm: Some(-m.depth_remaining_mm),
                pivot_lps: Some(add(
                    needle.tip_planning_lps,
                    scale(needle.axis_planning_lps, m.depth_remaining_mm),
                )),
                ..none
            }
        };
    }
    let skin = skin_along(needle, planning);
    let pivot = add(skin, scale(needle.axis_planning_lps, PIVOT_DEPTH_MM));
    let withdraw = dot(
        sub(needle.tip_planning_lps, pivot),
        needle.axis_planning_lps,
    )
    .max(0.0);
    let new_axis = unit(sub(target, pivot)).unwrap_or(needle.axis_planning_lps);
    let reangle = dot(new_axis, needle.axis_planning_lps)
        .clamp(-1.0, 1.0)
        .acos()
        .to_degrees();
    let sideways = sub(
        new_axis,
        scale(
            needle.axis_planning_lps,
            dot(new_axis, needle.axis_planning_lps),
        ),
    );
    let toward = patient_side(sideways);
    let advance = norm(sub(target, pivot));
    Correction {
        action: "redirect".to_owned(),
        text: format!(
            "withdraw {withdraw:.0} mm (to {PIVOT_DEPTH_MM:.0} mm below the skin), re-angle {reangle:.1}° toward {toward}, advance {advance:.0} mm to the target"
        ),
        withdraw_mm: Some(withdraw),
        reangle_deg: Some(reangle),
        reangle_toward: Some(toward),
        advance_mm: Some(advance),
        pivot_lps: Some(pivot),
    }
}

/// Where the needle's line enters the body (first point above −300 HU walking from the
/// hub end toward the tip, after backing up 60 mm from the hub end); the hub end when the
/// line never leaves the body.
fn skin_along(needle: &FoundNeedle, planning: &Volume<f32>) -> Vec3 {
    let axis = needle.axis_planning_lps;
    let start = sub(needle.hub_end_planning_lps, scale(axis, 60.0));
    let length = 60.0 + norm(sub(needle.tip_planning_lps, needle.hub_end_planning_lps));
    let mut outside_seen = false;
    for s in 0..(length / 0.5) as usize {
        let p = add(start, scale(axis, s as f64 * 0.5));
        match planning.sample_trilinear(p) {
            Some(hu) if hu < -300.0 => outside_seen = true,
            Some(_) if outside_seen => return p,
            _ => {}
        }
    }
    needle.hub_end_planning_lps
}

/// Slice of the planning scan containing the needle's axis and the target: the planned
/// path in green, the needle in yellow, the corrected path in cyan, target as a red cross.
fn check_picture(
    planning: &Volume<f32>,
    entry: Vec3,
    target: Vec3,
    needle: Option<&FoundNeedle>,
    correction: Option<&Correction>,
) -> RgbPicture {
    let size = 384usize;
    let pixel_mm = 0.5;
    let planned = unit(sub(target, entry)).unwrap_or([0.0, 0.0, 1.0]);
    let down = needle.map_or(planned, |n| n.axis_planning_lps);
    // In-plane: toward the target from the needle line, else the most perpendicular axis.
    let across = needle
        .and_then(|n| {
            let t = sub(target, n.tip_planning_lps);
            unit(sub(t, scale(down, dot(t, down))))
        })
        .or_else(|| {
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
                .into_iter()
                .min_by(|a, b| dot(*a, down).abs().total_cmp(&dot(*b, down).abs()))
                .and_then(|h| unit(sub(h, scale(down, dot(h, down)))))
        })
        .unwrap_or([1.0, 0.0, 0.0]);
    // Keep the patient's right on the viewer's left where the plane allows it.
    let across = if across[0] < 0.0 {
        scale(across, -1.0)
    } else {
        across
    };
    let centre = needle.map_or(target, |n| scale(add(n.tip_planning_lps, target), 0.5));
    let half = size as f64 * pixel_mm / 2.0;
    let mut rgb = vec![0u8; size * size * 3];
    for r in 0..size {
        for c in 0..size {
            let u = -half + (c as f64 + 0.5) * pixel_mm;
            let v = -half + (r as f64 + 0.5) * pixel_mm;
            let p = add(centre, add(scale(across, u), scale(down, v)));
            let hu = planning.sample_trilinear(p).unwrap_or(-1000.0);
            let g = (((hu + 160.0) / 400.0).clamp(0.0, 1.0) * 255.0) as u8;
            let o = (r * size + c) * 3;
            rgb[o..o + 3].copy_from_slice(&[g, g, g]);
        }
    }
    let mut draw = |from: Vec3, to: Vec3, colour: [u8; 3]| {
        let length = norm(sub(to, from));
        for s in 0..=(length / (pixel_mm / 2.0)) as usize {
            let p = add(
                from,
                scale(sub(to, from), s as f64 * pixel_mm / 2.0 / length.max(1e-9)),
            );
            let d = sub(p, centre);
            let c = ((dot(d, across) + half) / pixel_mm).floor();
            let r = ((dot(d, down) + half) / pixel_mm).floor();
            if (0.0..size as f64).contains(&c) && (0.0..size as f64).contains(&r) {
                let o = (r as usize * size + c as usize) * 3;
                rgb[o..o + 3].copy_from_slice(&colour);
            }
        }
    };
    draw(entry, target, [60, 220, 60]);
    if let Some(n) = needle {
        draw(n.hub_end_planning_lps, n.tip_planning_lps, [250, 230, 40]);
    }
    if let Some(pivot) = correction.and_then(|c| c.pivot_lps) {
        draw(pivot, target, [40, 220, 255]);
    }
    for (a, b) in [([-3.0, 0.0], [3.0, 0.0]), ([0.0, -3.0], [0.0, 3.0])] {
        let p = |o: [f64; 2]| add(target, add(scale(across, o[0]), scale(down, o[1])));
        draw(p(a), p(b), [255, 40, 40]);
    }
    let mut canvas = Canvas {
        rgb: &mut rgb,
        width: size,
        height: size,
    };
    canvas.orientation_letters(across, down);
    canvas.scale_bar(pixel_mm);
    RgbPicture {
        width: size,
        height: size,
        rgb,
    }
}

fn markups(
    entry: Vec3,
    target: Vec3,
    needle: Option<&FoundNeedle>,
    correction: Option<&Correction>,
) -> Vec<Markup> {
    let mut list = vec![line("planned path", entry, target, [0.25, 0.85, 0.25])];
    if let Some(n) = needle {
        list.push(line(
            "detected needle",
            n.hub_end_planning_lps,
            n.tip_planning_lps,
            [1.0, 0.9, 0.15],
        ));
    }
    if let Some(pivot) = correction.and_then(|c| c.pivot_lps) {
        list.push(line("correction", pivot, target, [0.15, 0.85, 1.0]));
    }
    list
}

fn line(name: &str, from: Vec3, to: Vec3, color_rgb: [f64; 3]) -> Markup {
    Markup {
        kind: MarkupKind::Line,
        name: name.to_owned(),
        points: vec![
            ControlPoint::new("start", from),
            ControlPoint::new("end", to),
        ],
        color_rgb: Some(color_rgb),
    }
}

impl NeedleCheckOutcome {
    pub const FILES: [&'static str; 4] = [
        "needle_check.png",
        "needle_check.mrk.json",
        "control_to_planning.tfm",
        "needle_check.json",
    ];

    /// Writes the files into `out` (the report last).
    pub fn write(&self, out: &Path) -> Result<()> {
        write_folder(out, "needle_check.json", &self.report, |out| {
            write_picture(&out.join("needle_check.png"), &self.picture)?;
            pinhole_io::markups::write_markups(&out.join("needle_check.mrk.json"), &self.markups)?;
            crate::control_ct::write_transform_with(
                &out.join("control_to_planning.tfm"),
                &self.report.registration,
                self.field.as_ref(),
            )
        })
    }
}

impl NeedleCheckReport {
    /// What the terminal shows.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = crate::control_ct::alignment_summary(&self.registration);
        match (&self.needle, &self.metrics, &self.correction) {
            (Some(n), Some(m), Some(c)) => {
                lines.push(format!(
                    "needle found (confidence {:.2}, {:.0} mm visible): tip {:.1} mm from the target, {:.1}° off the plan, passes {:.1} mm from the target, {:.1} mm to go",
                    n.in_control.confidence, n.in_control.visible_length_mm, m.tip_to_target_mm, m.angle_to_plan_deg, m.miss_at_target_depth_mm, m.depth_remaining_mm
                ));
                if !m.crossings_ahead.is_empty() {
                    lines.push(format!(
                        "ahead of the tip: {}",
                        m.crossings_ahead
                            .iter()
                            .map(|c| format!("{} at {:.0} mm", c.name, c.distance_from_tip_mm))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                lines.push(format!("correction: {}", c.text));
            }
            _ => lines.push(format!(
                "NO NEEDLE FOUND: {}",
                self.not_found_reason.as_deref().unwrap_or("unknown reason")
            )),
        }
        lines
    }
}

/// A warning when the tip's position is less certain than the model fit makes it.
fn tip_warning(tip_method: &str) -> Option<String> {
    if tip_method.starts_with(STEEPEST_EDGE) {
        Some(format!(
            "the tip was placed at the steepest edge of the clipped metal profile ({tip_method}): along the needle it may be off by up to ~1.5 mm"
        ))
    } else if tip_method == SCAN_EDGE {
        Some("the needle runs out of the control scan at its tip end: the tip shown is the last metal voxel, the true tip may lie beyond the scan".to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_intraop::needle::{HALF_MAXIMUM, MODEL_FIT};

    #[test]
    fn a_tip_not_placed_by_the_fit_or_at_the_scan_edge_is_warned_about() {
        let rejected = format!("{STEEPEST_EDGE}; model fit not used: the model fits poorly");
        let warning = tip_warning(&rejected).expect("a warning");
        assert!(warning.contains("up to ~1.5 mm") && warning.contains("fits poorly"));
        let warning = tip_warning(SCAN_EDGE).expect("a warning");
        assert!(warning.contains("beyond the scan"), "{warning}");
        assert_eq!(tip_warning(MODEL_FIT), None);
        assert_eq!(tip_warning(HALF_MAXIMUM), None);
    }
}
