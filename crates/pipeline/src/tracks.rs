//! Every ablation applicator's own track checked against the needle rules of the plan
//! it follows: applicators run parallel to the plan's best path, each from the point
//! level with the plan's entry (on the plane through it across the axis) to its own tip,
//! and each may break the rules on its own.

use std::path::Path;

use pinhole_ablation::plan::PlacedZone;
use pinhole_io::labels::LabelTable;
use pinhole_plan_needle::{PlanOptions, PlanningContext, Profile};
use pinhole_volume::math::{distance, dot, scale, sub};
use pinhole_volume::target::TargetSpec;
use pinhole_volume::{Vec3, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::error::Result;
use crate::inputs::{table_entries, unnamed_label_name};
use crate::needle::{unnamed_risk_group, PlanPaths};

/// One applicator's track under the needle plan's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicatorTrack {
    /// 1-based, as in `zones`.
    pub applicator: usize,
    pub entry_lps: Vec3,
    pub tip_lps: Vec3,
    pub length_mm: f64,
    /// The procedure whose rules were applied (the plan's).
    pub procedure: String,
    /// Distance from the track to each risk group, mm (`null`: the structure is not in
    /// the label map).
    pub min_clearance_mm: BTreeMap<String, Option<f64>>,
    /// The rules the track breaks (empty: it keeps them all).
    pub violations: Vec<String>,
    pub feasible: bool,
}

/// What the check found: the tracks, and warnings for each track that breaks a rule or
/// could not be checked.
pub struct TrackCheck {
    pub tracks: Vec<ApplicatorTrack>,
    pub warnings: Vec<String>,
}

/// Checks every applicator of `zones` (tips and axes) against the rules of the plan at
/// `plan_path`, whose best path the first applicator follows.
pub fn check_tracks(
    plan_path: &Path,
    zones: &[PlacedZone],
    ct: &Volume<f32>,
    labels: &Volume<u16>,
    table: &LabelTable,
    unnamed: &[(u16, usize)],
) -> Result<TrackCheck> {
    let plan = PlanPaths::read(plan_path)?;
    let Some(first_path) = plan.paths.first() else {
        return Ok(TrackCheck {
            tracks: Vec::new(),
            warnings: Vec::new(),
        });
    };
    let mut profile = match Profile::builtin(&plan.procedure) {
        Ok(p) => p,
        Err(_) => {
            return Ok(TrackCheck {
                tracks: Vec::new(),
                warnings: vec![format!(
                    "applicator tracks not checked against needle rules: {} names no built-in procedure ({:?})",
                    plan_path.display(),
                    plan.procedure
                )],
            })
        }
    };
    let mut entries = table_entries(table);
    if !unnamed.is_empty() {
        entries.extend(
            unnamed
                .iter()
                .map(|&(id, _)| (u32::from(id), unnamed_label_name(id))),
        );
        profile.risk_groups.push(unnamed_risk_group(unnamed));
    }
    let ctx = PlanningContext::new(ct.clone(), labels.clone())?;
    let mut tracks = Vec::new();
    let mut warnings = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        // Back from the tip along the applicator to the depth of the plan's entry.
        let axis = zone.axis_lps;
        let entry = sub(
            zone.tip_lps,
            scale(axis, dot(sub(zone.tip_lps, first_path.entry_lps), axis)),
        );
        let number = i + 1;
        match check_one(&ctx, &profile, &entries, entry, zone.tip_lps) {
            Ok(track) => {
                if !track.feasible {
                    warnings.push(format!(
                        "applicator {number}'s track (entry {:.1},{:.1},{:.1}) breaks the {} rules: {}",
                        entry[0],
                        entry[1],
                        entry[2],
                        profile.name,
                        track.violations.join(", ")
                    ));
                }
                tracks.push(ApplicatorTrack {
                    applicator: number,
                    ..track
                });
            }
            Err(e) => warnings.push(format!(
                "applicator {number}'s track could not be checked against the {} rules: {e}",
                profile.name
            )),
        }
    }
    Ok(TrackCheck { tracks, warnings })
}

fn check_one(
    ctx: &PlanningContext,
    profile: &Profile,
    entries: &[(u32, String)],
    entry: Vec3,
    tip: Vec3,
) -> Result<ApplicatorTrack> {
    let spec: TargetSpec = format!("{},{},{}", tip[0], tip[1], tip[2]).parse()?;
    let target = spec.resolve(ctx.labels(), |_| None)?;
    let options = PlanOptions {
        entry_lps: Some(entry),
        ..PlanOptions::default()
    };
    let plan = ctx.plan(profile, entries, &target, &options)?;
    let path = plan.paths.into_iter().next().ok_or_else(|| {
        crate::error::Error::invalid("the needle planner returned no path for the track")
    })?;
    Ok(ApplicatorTrack {
        applicator: 0,
        entry_lps: entry,
        tip_lps: tip,
        length_mm: distance(entry, tip),
        procedure: profile.name.clone(),
        min_clearance_mm: path.min_clearance_mm,
        feasible: path.feasible,
        violations: path.violations,
    })
}
