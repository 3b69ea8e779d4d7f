//! Straight-needle planning (`pinhole plan needle`): `plan.json` ([`NeedleReport`]),
//! `paths.mrk.json` (Slicer lines), `skin_access.vtk` and `best.png`.

use std::path::{Path, PathBuf};

use pinhole_guidance::PlannedNeedle;
use pinhole_io::markups::{write_markups, ControlPoint, Markup, MarkupKind};
use pinhole_io::vtk::{write_polylines, PolyLines};
use pinhole_plan_needle::profile::RiskGroup;
use pinhole_plan_needle::render::{self, RgbImage};
use pinhole_plan_needle::{Plan, PlanOptions, PlanningContext, Profile};
use pinhole_volume::math::DVec3;
use pinhole_volume::{TargetSpec, Vec3};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::inputs::{
    cut_risk_structure_warnings, load_checked_ct, load_named_labels_on, scan_edge_warning,
    table_entries, unnamed_label_name, unnamed_warning, InputFile, NamedLabels, NotCt,
    UnnamedLabels,
};
use crate::limits;
use crate::observe::{step, Observer};
use crate::report::{
    self, unversioned, versioned_report, write_folder, Report, DISCLAIMER, VERSION,
};

/// What to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedleRequest {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    pub ct: PathBuf,
    /// Label map on the CT's grid.
    pub labels: PathBuf,
    /// Label table (default TotalSegmentator v2).
    pub labels_table: Option<String>,
    /// Procedure (a shipped profile): `kidney-biopsy`, `liver-biopsy`, …
    pub procedure: String,
    /// A profile file (TOML) replacing the shipped profile.
    pub profile: Option<PathBuf>,
    /// Target: a label (`kidney_cyst_left`, `liver:deepest`,
    /// `kidney_left:lower-pole-cortex`), `x,y,z` or `x,y,z,r`.
    pub target: String,
    /// Candidate directions.
    pub candidates: usize,
    /// Paths to return.
    pub top: usize,
    /// Evaluate only the path from this skin point (LPS mm).
    pub entry_lps: Option<Vec3>,
    /// Labelled voxels the table does not name: refuse (default) or avoid them.
    pub unnamed_labels: UnnamedLabels,
    /// A CT that does not look like one: refuse (default) or go on with a warning.
    pub not_ct: NotCt,
}

impl NeedleRequest {
    /// A request with the default search (40,000 candidates, 5 paths).
    pub fn new(ct: &Path, labels: &Path, procedure: &str, target: &str) -> Self {
        let options = PlanOptions::default();
        Self {
            ct: ct.to_path_buf(),
            labels: labels.to_path_buf(),
            labels_table: None,
            procedure: procedure.to_owned(),
            profile: None,
            target: target.to_owned(),
            candidates: options.candidates,
            top: options.top_k,
            entry_lps: None,
            unnamed_labels: UnnamedLabels::default(),
            not_ct: NotCt::default(),
        }
    }
}

/// `plan.json`: the planner's answer and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NeedleReport {
    /// Format version ([`NeedleReport::SCHEMA_VERSION`]; 0: written before versioning).
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    #[serde(flatten)]
    pub plan: Plan,
    /// The label table's name or file.
    pub labels_table: String,
    /// The profile file, when one replaced the shipped profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_file: Option<InputFile>,
    /// The CT and the label map.
    pub inputs: Vec<InputFile>,
    pub version: String,
    pub note: String,
}

// 2: `min_clearance_mm` values may be `null` (a risk group with no structure in the
// label map; version 1 wrote a 1024 mm sentinel).
versioned_report!(NeedleReport, "needle-plan", 2);

/// What other steps use of a needle plan: the target, the paths' lines and the risk
/// groups. Read from a `plan.json` ([`PlanPaths::read`]: Pinhole's, or a hand-written
/// `{"target_lps": [..], "paths": [{"entry_lps": [..], "target_lps": [..]}]}`; other
/// fields are ignored) or taken from a [`NeedleReport`] in memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlanPaths {
    /// Format version (0: unversioned or hand-written).
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    /// The procedure (empty when the file does not say).
    #[serde(default)]
    pub procedure: String,
    pub target_lps: Vec3,
    /// Best first.
    pub paths: Vec<PlannedPath>,
    /// The profile's risk groups, when the file has them.
    #[serde(default)]
    pub profile: Option<PlanRiskGroups>,
}

/// One planned needle line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlannedPath {
    pub entry_lps: Vec3,
    pub target_lps: Vec3,
    /// As the planner reported it (entry to target), when the file has it.
    #[serde(default)]
    pub length_mm: Option<f64>,
}

impl PlannedPath {
    /// Entry to target, mm.
    pub fn length_mm(&self) -> f64 {
        self.length_mm.unwrap_or_else(|| {
            (DVec3::from(self.target_lps) - DVec3::from(self.entry_lps)).length()
        })
    }
}

/// `profile.risk_groups` of a plan (labels expanded).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlanRiskGroups {
    #[serde(default)]
    pub risk_groups: Option<Vec<RiskGroup>>,
}

impl PlanPaths {
    /// Reads the paths of a `plan.json`; a file from a newer Pinhole is refused.
    pub fn read(path: &Path) -> Result<Self> {
        let plan: Self = report::read_json(path, NeedleReport::NAME)?;
        report::check_version(
            path,
            NeedleReport::NAME,
            plan.schema_version,
            NeedleReport::SCHEMA_VERSION,
        )?;
        Ok(plan)
    }

    /// What guidance follows: the best path and the plan's risk groups.
    pub fn planned_needle(&self) -> PlannedNeedle {
        let first = self.paths.first();
        PlannedNeedle {
            target_lps: self.target_lps,
            entry_lps: first.map(|p| p.entry_lps),
            path_target_lps: first.map_or(self.target_lps, |p| p.target_lps),
            risk_groups: self.profile.as_ref().and_then(|p| p.risk_groups.clone()),
        }
    }
}

impl From<&NeedleReport> for PlanPaths {
    fn from(report: &NeedleReport) -> Self {
        let plan = &report.plan;
        Self {
            schema_version: report.schema_version,
            procedure: plan.procedure.clone(),
            target_lps: plan.target_lps,
            paths: plan
                .paths
                .iter()
                .map(|p| PlannedPath {
                    entry_lps: p.entry_lps,
                    target_lps: p.target_lps,
                    length_mm: Some(p.length_mm),
                })
                .collect(),
            profile: Some(PlanRiskGroups {
                risk_groups: Some(plan.profile.profile.risk_groups.clone()),
            }),
        }
    }
}

/// The risk group that keeps needles out of labelled voxels the table does not name
/// (`--unnamed-labels forbid`): a needle must not enter an unknown structure; the
/// clearance is the bone group's (needle radius + margin).
pub fn unnamed_risk_group(unnamed: &[(u16, usize)]) -> RiskGroup {
    RiskGroup {
        name: "unnamed_labels".to_owned(),
        labels: unnamed.iter().map(|&(id, _)| unnamed_label_name(id)).collect(),
        clearance_mm: 3.0,
        optional: false,
        weight: 1.0,
        source: "--unnamed-labels forbid: label ids the label table does not name are unknown structures; avoided like bone (needle radius + margin, 3 mm)".to_owned(),
    }
}

/// A plan with the pictures and files that go with it.
#[derive(Debug, Clone)]
pub struct NeedleOutcome {
    pub report: NeedleReport,
    /// Each skin point reached: a 3 mm hair along the needle, `accessible` and `score`.
    pub skin_access: PolyLines,
    /// The CT in the best path's plane with labels and paths.
    pub best_png: RgbImage,
}

/// Plans needle paths.
pub fn run(request: &NeedleRequest, observer: &dyn Observer) -> Result<NeedleOutcome> {
    limits::CANDIDATES.check_count(request.candidates)?;
    limits::TOP_PATHS.check_count(request.top)?;
    limits::check_finite_point("--entry", request.entry_lps)?;
    let mut profile = match &request.profile {
        Some(path) => Profile::from_toml_file(path)?,
        None => Profile::builtin(&request.procedure)?,
    };
    let spec: TargetSpec = request.target.parse()?;
    let (ct, not_ct_warning) = load_checked_ct(&request.ct, request.not_ct, observer)?;
    let NamedLabels {
        labels,
        table_name,
        table,
        unnamed,
        warnings: label_warnings,
    } = load_named_labels_on(
        &request.labels,
        request.labels_table.as_deref(),
        request.unnamed_labels,
        Some(ct.grid()),
        observer,
    )?;
    let mut entries = table_entries(&table);
    if !unnamed.is_empty() {
        entries.extend(
            unnamed
                .iter()
                .map(|&(id, _)| (u32::from(id), unnamed_label_name(id))),
        );
        profile.risk_groups.push(unnamed_risk_group(&unnamed));
    }
    let (ctx, mut plan) = step(observer, "planning", || -> Result<_> {
        let ctx = PlanningContext::new(ct, labels)?;
        let target = spec.resolve(ctx.labels(), |name| table.id_of(name))?;
        let edge = scan_edge_warning(
            &format!("target {}", target.description),
            &target.region.scan_edges_touched(),
        );
        let target = ctx.aim(&profile, target);
        let options = PlanOptions {
            candidates: request.candidates,
            top_k: request.top,
            entry_lps: request.entry_lps,
            ..PlanOptions::default()
        };
        let mut plan = ctx.plan(&profile, &entries, &target, &options)?;
        plan.warnings.extend(edge);
        let paths: Vec<(usize, Vec3, Vec3)> = plan
            .paths
            .iter()
            .map(|p| (p.rank, p.entry_lps, p.target_lps))
            .collect();
        plan.warnings.extend(cut_risk_structure_warnings(
            ctx.labels(),
            &plan.profile.profile.risk_groups,
            &entries,
            &paths,
        ));
        Ok((ctx, plan))
    })?;
    if !unnamed.is_empty() {
        let warning = unnamed_warning(
            &unnamed,
            "treated as structures to avoid (risk group unnamed_labels, 3 mm clearance)",
        );
        // The CLI prints the plan's warnings.
        plan.warnings.push(warning);
    }
    plan.warnings.extend(not_ct_warning);
    plan.warnings.extend(label_warnings);
    let color_of = |id: u16| table.color_of(u32::from(id));
    let best_png = render::needle_plane(&ctx, &plan, &color_of, 512, 0.5);
    let report = NeedleReport {
        schema_version: NeedleReport::SCHEMA_VERSION,
        labels_table: table_name,
        profile_file: request.profile.as_deref().map(InputFile::of).transpose()?,
        inputs: vec![
            InputFile::with_role("ct", &request.ct)?,
            InputFile::with_role("labels", &request.labels)?,
        ],
        version: VERSION.to_owned(),
        note: format!("{DISCLAIMER} Not for clinical use: paths are proposals from label maps and must be checked by a physician."),
        plan,
    };
    Ok(NeedleOutcome {
        skin_access: skin_access(&report.plan),
        best_png,
        report,
    })
}

impl NeedleOutcome {
    /// The files [`NeedleOutcome::write`] puts in its folder.
    pub const FILES: [&'static str; 4] =
        ["plan.json", "paths.mrk.json", "skin_access.vtk", "best.png"];

    /// Writes `plan.json`, `paths.mrk.json`, `skin_access.vtk` and `best.png` into `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        write_folder(out, "plan.json", &self.report, |out| {
            write_markups(
                &out.join("paths.mrk.json"),
                &path_markups(&self.report.plan),
            )?;
            write_polylines(&out.join("skin_access.vtk"), &self.skin_access)?;
            let image = &self.best_png;
            pinhole_io::png::write_rgb8(
                &out.join("best.png"),
                image.width as u32,
                image.height as u32,
                &image.rgb,
            )?;
            Ok(())
        })
    }
}

impl NeedleReport {
    /// One line per path (for the terminal), and a warning per rule an `--entry` path
    /// breaks.
    pub fn summary(&self) -> (Vec<String>, Vec<String>) {
        let warnings = self
            .plan
            .paths
            .iter()
            .filter(|p| !p.feasible)
            .map(|p| format!("the path from --entry breaks: {}", p.violations.join(", ")))
            .collect();
        let lines = self
            .plan
            .paths
            .iter()
            .map(|p| {
                format!(
                    "path {}: entry {:.1},{:.1},{:.1}  length {:.1} mm  skin angle {:.0} deg  score {:.3}",
                    p.rank,
                    p.entry_lps[0],
                    p.entry_lps[1],
                    p.entry_lps[2],
                    p.length_mm,
                    p.skin_angle_deg,
                    p.score
                )
            })
            .collect();
        (lines, warnings)
    }
}

/// The paths as Slicer line markups: the best in red, alternatives in yellow.
pub fn path_markups(plan: &Plan) -> Vec<Markup> {
    plan.paths
        .iter()
        .map(|p| Markup {
            kind: MarkupKind::Line,
            name: if p.rank == 1 {
                format!("{} best", plan.procedure)
            } else {
                format!("{} alternative {}", plan.procedure, p.rank - 1)
            },
            points: vec![
                ControlPoint::new("entry", p.entry_lps),
                ControlPoint::new("target", p.target_lps),
            ],
            color_rgb: Some(if p.rank == 1 {
                [1.0, 0.15, 0.15]
            } else {
                [1.0, 0.8, 0.0]
            }),
        })
        .collect()
}

/// Skin accessibility: a 3 mm hair along the needle axis at every skin point reached,
/// with scalars `accessible` (0/1) and `score`.
fn skin_access(plan: &Plan) -> PolyLines {
    let mut vtk = PolyLines::default();
    let mut accessible = Vec::new();
    let mut score = Vec::new();
    for (entry, dir, ok, s) in &plan.skin_points {
        let base = vtk.points_lps.len();
        vtk.points_lps.push(*entry);
        vtk.points_lps
            .push((DVec3::from(*entry) + 3.0 * DVec3::from(*dir)).to_array());
        vtk.lines.push(vec![base, base + 1]);
        for _ in 0..2 {
            accessible.push(if *ok { 1.0 } else { 0.0 });
            score.push(*s);
        }
    }
    vtk.point_scalars = vec![("accessible".into(), accessible), ("score".into(), score)];
    vtk
}
