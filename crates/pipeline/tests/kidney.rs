//! Regression (#17, "Kidney biopsy"): the kidney-biopsy profile had no rib rule, and a
//! whole-kidney target was aimed at its centroid (the renal sinus).
//!
//! * The needle must pass below rib 11 wherever it runs over it (11th intercostal space
//!   or below rib 12). On the demo's sample (cut from `../shared/data/chest-ct`) the
//!   best path to the left kidney cyst ran over rib 11 above it without the rule; on
//!   the abdomen CT (`../shared/data/abdomen-ct`, ribs 11 and 12 labelled on both sides)
//!   the plan to the right kidney passes below rib 11.
//! * A bare `kidney_left` is aimed at its lower-pole cortex with a warning naming the
//!   lesion labels; a lesion label and an explicit `:centroid` are aimed as written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pinhole_pipeline::demo;
use pinhole_pipeline::inputs::{load_named_labels, UnnamedLabels};
use pinhole_pipeline::needle::NeedleRequest;
use pinhole_pipeline::Quiet;
use pinhole_plan_needle::{Plan, BUILTIN};
use pinhole_volume::{Vec3, Volume};

use crate::shared::shared_data;

/// The abdomen CT (30 slices, 3 mm) and its TotalSegmentator v2 label map.
fn abdomen() -> (PathBuf, PathBuf) {
    (
        shared_data("abdomen-ct/example_ct_sm.nii.gz"),
        shared_data("abdomen-ct/example_seg.nii.gz"),
    )
}

/// Labels and a name → id lookup of a label map (built-in v2 table, or `table`).
fn labels_of(path: &Path, table: Option<&str>) -> (Volume<u16>, impl Fn(&str) -> u16) {
    let named = load_named_labels(path, table, UnnamedLabels::default(), &Quiet).unwrap();
    let lookup = named.table.clone();
    let id = move |name: &str| u16::try_from(lookup.id_of(name).unwrap()).unwrap();
    (named.labels, id)
}

/// Written independently of the planner: how far the segment `target`–`entry` stays
/// below the voxels of `rib` where it runs over them (the least rib voxel z − needle
/// z, over needle points sampled every 0.25 mm outside `organ`, in a column of the
/// label grid holding a rib voxel or next to one), and the needle point and rib z
/// where that least margin occurs. `None`: the needle never runs over the rib.
fn margin_below(
    labels: &Volume<u16>,
    rib: u16,
    organ: &[u16],
    target: Vec3,
    entry: Vec3,
) -> Option<(f64, Vec3, f64)> {
    let grid = labels.grid();
    let [nx, ny, _] = grid.dims();
    let mut lowest: HashMap<(usize, usize), f64> = HashMap::new();
    for (o, _) in labels.data().iter().enumerate().filter(|(_, &l)| l == rib) {
        let ijk = grid.index_of_offset(o);
        let z = grid.index_to_world(ijk.map(|v| v as f64))[2];
        for j in ijk[1].saturating_sub(1)..(ijk[1] + 2).min(ny) {
            for i in ijk[0].saturating_sub(1)..(ijk[0] + 2).min(nx) {
                let e = lowest.entry((i, j)).or_insert(f64::INFINITY);
                *e = e.min(z);
            }
        }
    }
    let length = (0..3)
        .map(|a| (entry[a] - target[a]).powi(2))
        .sum::<f64>()
        .sqrt();
    let n = (length / 0.25).ceil() as usize;
    let mut worst: Option<(f64, Vec3, f64)> = None;
    for s in 0..=n {
        let t = s as f64 / n as f64;
        let p: Vec3 = std::array::from_fn(|a| target[a] + (entry[a] - target[a]) * t);
        let Some(v) = grid.world_to_voxel(p) else {
            continue;
        };
        if organ.contains(&labels.data()[grid.offset(v)]) {
            continue;
        }
        if let Some(&z) = lowest.get(&(v[0], v[1])) {
            if worst.is_none_or(|w| z - p[2] < w.0) {
                worst = Some((z - p[2], p, z));
            }
        }
    }
    worst
}

/// The shipped kidney-biopsy profile without its `[entry_caudal_to]` table (the rule as
/// it was before), written to `dir`.
fn without_rib_rule(dir: &Path) -> PathBuf {
    let (_, text) = BUILTIN.iter().find(|(n, _)| *n == "kidney-biopsy").unwrap();
    let start = text.find("[entry_caudal_to]").unwrap();
    let end = start + text[start..].find("\n[").unwrap();
    let path = dir.join("kidney-biopsy-without-rib-rule.toml");
    std::fs::write(&path, format!("{}{}", &text[..start], &text[end + 1..])).unwrap();
    path
}

#[test]
fn kidney_biopsy_needles_pass_below_rib_11() {
    // The demo's sample: the left kidney cyst, ribs 11 and 12 labelled on the left.
    let tmp = tempfile::tempdir().unwrap();
    let data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(tmp.path(), &data).unwrap();
    let table = files.table.display().to_string();
    let (labels, id) = labels_of(&files.labels, Some(&table));
    let organ = [id("kidney_left"), id("kidney_cyst_left")];
    let request = |profile: Option<PathBuf>| NeedleRequest {
        labels_table: Some(table.clone()),
        profile,
        ..NeedleRequest::new(
            &files.ct,
            &files.labels,
            "kidney-biopsy",
            "kidney_cyst_left",
        )
    };
    let plan_of = |r: NeedleRequest| pinhole_pipeline::needle::run(&r, &Quiet).unwrap();
    let old = plan_of(request(Some(without_rib_rule(tmp.path()))))
        .report
        .plan;
    let best = &old.paths[0];
    let (margin, at, rib_z) = margin_below(
        &labels,
        id("rib_left_11"),
        &organ,
        best.target_lps,
        best.entry_lps,
    )
    .expect("the old best path runs over rib 11");
    eprintln!(
        "sample, without the rule: best entry {:?}; the needle passes {:.1} mm above rib 11 (needle z {:.1}, rib 11 voxel z {rib_z:.1})",
        best.entry_lps, -margin, at[2]
    );
    assert!(margin < 0.0, "old best path passes below rib 11: {margin}");

    let new = plan_of(request(None)).report.plan;
    assert_below_rib_11(&new, &labels, id("rib_left_11"), &organ, "rib_left_11");
    assert!(new.rejected.get("entry_caudal_to").copied().unwrap_or(0) > 0);

    // The abdomen CT: ribs 11 and 12 labelled on both sides; the right kidney.
    let (ct, seg) = abdomen();
    let (labels, id) = labels_of(&seg, None);
    let organ = [id("kidney_right"), id("kidney_cyst_right")];
    let report = pinhole_pipeline::needle::run(
        &NeedleRequest::new(&ct, &seg, "kidney-biopsy", "kidney_right"),
        &Quiet,
    )
    .unwrap()
    .report;
    let plan = report.plan;
    assert_below_rib_11(&plan, &labels, id("rib_right_11"), &organ, "rib_right_11");
    let best = &plan.paths[0];
    let (margin, at, rib_z) = margin_below(
        &labels,
        id("rib_right_11"),
        &organ,
        best.target_lps,
        best.entry_lps,
    )
    .expect("the best path runs over rib 11");
    eprintln!(
        "abdomen CT: best entry z {:.1} mm; it passes {margin:.1} mm below rib 11 (needle z {:.1}, rib 11 voxel z {rib_z:.1}); rib 11's lowest voxel z {:.1}",
        best.entry_lps[2],
        at[2],
        lowest_z(&labels, id("rib_right_11"))
    );
}

/// Every path of `plan` reports a margin below rib 11 of at least 0 that agrees with
/// [`margin_below`], and the plan says the rule came from `rib`.
fn assert_below_rib_11(plan: &Plan, labels: &Volume<u16>, id: u16, organ: &[u16], rib: &str) {
    let from = plan.profile.entry_caudal_to_from.as_deref().unwrap_or("");
    assert!(from.contains(rib), "entry_caudal_to_from: {from:?}");
    for path in &plan.paths {
        let ours = margin_below(labels, id, organ, path.target_lps, path.entry_lps);
        match (path.entry_caudal_to_margin_mm, ours) {
            (None, None) => {}
            (Some(reported), Some((margin, _, _))) => {
                assert!(reported >= 0.0, "path {}: {reported}", path.rank);
                // The planner samples every half voxel, this check every 0.25 mm.
                assert!(
                    margin >= -0.5 && (reported - margin).abs() < 1.5,
                    "path {}: reported {reported}, measured {margin}",
                    path.rank
                );
            }
            (reported, ours) => panic!("path {}: {reported:?} vs {ours:?}", path.rank),
        }
    }
}

fn lowest_z(labels: &Volume<u16>, id: u16) -> f64 {
    let grid = labels.grid();
    labels
        .data()
        .iter()
        .enumerate()
        .filter(|(_, &l)| l == id)
        .map(|(o, _)| grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64))[2])
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn a_whole_kidney_is_aimed_at_its_lower_pole_cortex_with_a_warning() {
    let (ct, seg) = abdomen();
    let (labels, id) = labels_of(&seg, None);
    let run = |target: &str| {
        pinhole_pipeline::needle::run(
            &NeedleRequest::new(&ct, &seg, "kidney-biopsy", target),
            &Quiet,
        )
        .unwrap()
        .report
        .plan
    };
    let centroid = run("kidney_right:centroid");
    assert_eq!(centroid.target_aim.as_deref(), Some("centroid"));
    assert!(
        !centroid.warnings.iter().any(|w| w.contains("lower-pole")),
        "{:?}",
        centroid.warnings
    );

    let plan = run("kidney_right");
    assert_eq!(plan.target_aim.as_deref(), Some("lower-pole-cortex"));
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.contains("lower-pole cortex (medical renal biopsy)"))
        .unwrap_or_else(|| panic!("{:?}", plan.warnings));
    assert!(warning.starts_with("target kidney_right"), "{warning}");
    assert!(warning.contains("for a mass, target the lesion's label"));
    assert!(warning.contains("kidney_cyst_left"), "{warning}");
    let p = plan.target_lps;
    let c = centroid.target_lps;
    let off = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>().sqrt();
    eprintln!("kidney_right: centroid {c:?}, lower-pole cortex {p:?}, {off:.1} mm apart");
    assert!(
        off > 15.0,
        "aim {p:?} is {off:.1} mm from the centroid {c:?}"
    );
    assert!(p[2] < c[2], "the aim lies caudal to the centroid");
    assert_eq!(labels.sample_nearest(p), Some(id("kidney_right")));

    // A lesion label is aimed as given, without the warning (the sample's left cyst).
    let tmp = tempfile::tempdir().unwrap();
    let data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(tmp.path(), &data).unwrap();
    let lesion = pinhole_pipeline::needle::run(
        &NeedleRequest {
            labels_table: Some(files.table.display().to_string()),
            ..NeedleRequest::new(
                &files.ct,
                &files.labels,
                "kidney-biopsy",
                "kidney_cyst_left",
            )
        },
        &Quiet,
    )
    .unwrap()
    .report
    .plan;
    assert_eq!(lesion.target_aim.as_deref(), Some("centroid"));
    assert!(!lesion.warnings.iter().any(|w| w.contains("lower-pole")));
}
