//! Regression (#17): labelled voxels whose id the label table does not name were
//! ignored by every planner, so a path could run through them with `warnings: []`. Now
//! each planner refuses, naming the ids and their voxel counts, or, with
//! `UnnamedLabels::Forbid`, avoids them and says so in its report.
//!
//! Case: the demo's sample with a label table that lacks `iliopsoas_left` (id 88), a
//! muscle beside the left kidney.

use std::path::{Path, PathBuf};

use pinhole_pipeline::ablation::AblationRequest;
use pinhole_pipeline::demo;
use pinhole_pipeline::inputs::UnnamedLabels;
use pinhole_pipeline::needle::NeedleRequest;
use pinhole_pipeline::session::{build, GuidancePlan, SessionData, ViewerContent};
use pinhole_pipeline::vessel::RouteRequest;
use pinhole_pipeline::Quiet;

const MISSING_ID: u16 = 88;

struct Case {
    _dir: tempfile::TempDir,
    files: demo::DataFiles,
    /// The sample's table (`id,name`) without id 88.
    table: PathBuf,
    /// Voxels of id 88 in the label map, counted here.
    voxels: usize,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(dir.path(), &data).unwrap();
    let text = std::fs::read_to_string(&files.table).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{MISSING_ID},")))
        .collect();
    assert_eq!(kept.len() + 1, text.lines().count(), "one row removed");
    let table = dir.path().join("without_88.csv");
    std::fs::write(&table, kept.join("\n")).unwrap();
    let voxels = data
        .labels
        .data()
        .iter()
        .filter(|&&v| v == MISSING_ID)
        .count();
    assert!(voxels > 0);
    Case {
        _dir: dir,
        files,
        table,
        voxels,
    }
}

fn table_of(case: &Case) -> Option<String> {
    Some(case.table.display().to_string())
}

fn assert_names_the_missing_id(err: &dyn std::fmt::Display, voxels: usize, labels: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&format!("{MISSING_ID} ({voxels} voxels)")),
        "{text}"
    );
    assert!(text.contains(&labels.display().to_string()), "{text}");
    assert!(text.contains("--unnamed-labels forbid"), "{text}");
}

#[test]
fn needle_plans_refuse_or_avoid_unnamed_labels() {
    let case = case();
    let request = NeedleRequest {
        labels_table: table_of(&case),
        ..NeedleRequest::new(
            &case.files.ct,
            &case.files.labels,
            "kidney-biopsy",
            "kidney_cyst_left",
        )
    };
    let err = pinhole_pipeline::needle::run(&request, &Quiet).unwrap_err();
    assert_names_the_missing_id(&err, case.voxels, &case.files.labels);

    let forbid = NeedleRequest {
        unnamed_labels: UnnamedLabels::Forbid,
        ..request
    };
    let plan = pinhole_pipeline::needle::run(&forbid, &Quiet)
        .unwrap()
        .report
        .plan;
    assert!(
        plan.warnings.iter().any(
            |w| w.contains(&format!("{MISSING_ID} ({} voxels)", case.voxels))
                && w.contains("treated as structures to avoid")
        ),
        "{:?}",
        plan.warnings
    );
    let group = plan
        .profile
        .profile
        .risk_groups
        .iter()
        .find(|g| g.name == "unnamed_labels")
        .expect("the unnamed labels are a risk group");
    assert_eq!(group.labels, vec![format!("unnamed_label_{MISSING_ID}")]);
    assert!(!plan.paths.is_empty());
    for path in plan.paths.iter().filter(|p| p.feasible) {
        let clearance = path.min_clearance_mm["unnamed_labels"].expect("checked");
        assert!(
            clearance >= 3.0,
            "path {} passes {clearance} mm from id 88",
            path.rank
        );
    }
}

#[test]
fn routes_and_ablations_refuse_or_warn() {
    let case = case();
    let route = RouteRequest {
        labels_table: table_of(&case),
        ..RouteRequest::new(
            &case.files.labels,
            "subclavian_artery_right",
            "common_carotid_artery_left",
        )
    };
    let err = pinhole_pipeline::vessel::plan_route(&route, &Quiet).unwrap_err();
    assert_names_the_missing_id(&err, case.voxels, &case.files.labels);
    let report = pinhole_pipeline::vessel::plan_route(
        &RouteRequest {
            unnamed_labels: UnnamedLabels::Forbid,
            ..route
        },
        &Quiet,
    )
    .unwrap()
    .report;
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("label ids not in the label table: 88")
                && w.contains("the route never enters them")),
        "{:?}",
        report.warnings
    );

    let ablation = AblationRequest {
        labels_table: table_of(&case),
        ..AblationRequest::device(
            &case.files.ct,
            &case.files.labels,
            "-53.6,-19.6,-217.5,12",
            "emprint-example",
            100.0,
            5.0,
        )
    };
    let err = pinhole_pipeline::ablation::run(&ablation, &Quiet).unwrap_err();
    assert_names_the_missing_id(&err, case.voxels, &case.files.labels);
    let report = pinhole_pipeline::ablation::run(
        &AblationRequest {
            unnamed_labels: UnnamedLabels::Forbid,
            ..ablation
        },
        &Quiet,
    )
    .unwrap()
    .report;
    assert!(
        report.warnings[0].contains("not checked as heat sinks"),
        "{:?}",
        report.warnings
    );
}

#[test]
fn guidance_sessions_refuse_or_add_a_risk_group() {
    let case = case();
    let data = demo::load_data(None).unwrap();
    let table = pinhole_io::labels::LabelTable::load(&case.table.display().to_string()).unwrap();
    let session_data = |unnamed_labels| SessionData {
        ct: &data.ct,
        labels: &data.labels,
        table: &table,
        plan: GuidancePlan::Target("liver:deepest".to_owned()),
        registration: None,
        unnamed_labels,
        inputs: pinhole_guidance::SessionInputs {
            labels: Some(case.files.labels.display().to_string()),
            ..Default::default()
        },
    };
    let content = ViewerContent::default();
    let err = build(&session_data(UnnamedLabels::Refuse), &content, &Quiet).unwrap_err();
    assert_names_the_missing_id(&err, case.voxels, &case.files.labels);
    let session = build(&session_data(UnnamedLabels::Forbid), &content, &Quiet).unwrap();
    let group = session
        .description
        .risk_groups
        .iter()
        .find(|g| g.name == "unnamed_labels")
        .expect("a risk group for the unnamed labels");
    assert_eq!(group.labels, vec![format!("unnamed_label_{MISSING_ID}")]);
}

/// Regression (#17): a risk group with no structure in the label map was reported with a
/// 1024 mm sentinel clearance and no word. Now its clearance is `null` and `warnings`
/// say why; a group with some structures absent names them. Case: the kidney-biopsy
/// profile plus a group of the gallbladder alone, which the sample does not contain.
#[test]
fn absent_risk_structures_are_null_with_a_warning() {
    let case = case();
    let shipped = std::fs::read_to_string(
        crate::shared::repo_root().join("crates/plan-needle/profiles/kidney-biopsy.toml"),
    )
    .unwrap();
    let profile = case.table.with_file_name("kidney-with-gallbladder.toml");
    std::fs::write(
        &profile,
        format!(
            "{shipped}\n[[risk_groups]]\nname = \"gallbladder_only\"\nlabels = [\"gallbladder\"]\nclearance_mm = 5.0\nweight = 1.0\nsource = \"test\"\n"
        ),
    )
    .unwrap();
    let request = NeedleRequest {
        labels_table: Some(case.files.table.display().to_string()),
        profile: Some(profile),
        ..NeedleRequest::new(
            &case.files.ct,
            &case.files.labels,
            "kidney-biopsy",
            "kidney_cyst_left",
        )
    };
    let report = pinhole_pipeline::needle::run(&request, &Quiet)
        .unwrap()
        .report;
    let plan = &report.plan;
    assert!(!plan.paths.is_empty());
    for path in &plan.paths {
        assert_eq!(
            path.min_clearance_mm["gallbladder_only"], None,
            "no 1024 mm sentinel"
        );
        assert!(path.min_clearance_mm["bone"].is_some());
    }
    let text = plan.warnings.join("\n");
    assert!(
        text.contains("risk group gallbladder_only: none of its structures (gallbladder) is in the label map; its clearance is not checked (null)"),
        "{text}"
    );
    assert!(
        text.contains("risk group other_organs: gallbladder not in the label map"),
        "{text}"
    );
    let json = pinhole_pipeline::report::to_json(&report).unwrap();
    assert!(
        json.contains("\"gallbladder_only\": null"),
        "null in plan.json"
    );
}
