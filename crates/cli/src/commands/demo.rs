//! `pinhole demo`: the whole story on the embedded sample (or `--data DIR`), through the
//! same library calls as the other commands, then served with a live replay.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use pinhole_guidance::SessionInputs;
use pinhole_pipeline::demo::{self, DataFiles, DemoData, Story};
use pinhole_pipeline::needle::PlanPaths;
use pinhole_pipeline::session::{build, GuidancePlan, SessionData, ViewerContent};
use pinhole_pipeline::{Observer, DISCLAIMER};

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

pub fn run(args: &DemoArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    println!("{DISCLAIMER}");
    let data = demo::load_data(args.data.as_deref())?;
    describe(&data);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // A failure while writing leaves a marker (an earlier run's files are not this
    // run's); a complete set of files removes an earlier run's marker.
    let mut written = None;
    super::marking_failure(&args.out, "demo", || {
        written = Some(write_files(args, &data, terminal)?);
        super::remove_if_present(&args.out.join(pinhole_pipeline::report::FAILED_MARKER))
    })?;
    let Some(Written {
        files,
        story,
        ct_hu,
        sweep,
    }) = written
    else {
        anyhow::bail!("the demo's files were not written");
    };
    if args.no_serve {
        println!("{DISCLAIMER}");
        return Ok(());
    }
    serve_with_replay(args, &data, &files, story, (ct_hu, sweep), terminal)
}

/// What the demo wrote and planned before serving.
struct Written {
    files: DataFiles,
    story: Story,
    ct_hu: pinhole_volume::Volume<f32>,
    sweep: Option<pinhole_io::sequence::TrackedSequence>,
}

/// The sample's files, every procedure planned, and the ultrasound sweep.
fn write_files(
    args: &DemoArgs,
    data: &DemoData,
    terminal: &dyn Observer,
) -> anyhow::Result<Written> {
    let ct_out = args.out.join("ct.nrrd");
    pinhole_io::open::write_volume(&ct_out, &data.ct)?;
    let seg_out = args.out.join("labels.seg.nrrd");
    pinhole_io::segnrrd::write_segmentation(&seg_out, &data.labels, &data.table, true)?;
    println!(
        "wrote {} and {} (open both in 3D Slicer)",
        ct_out.display(),
        seg_out.display()
    );
    let drr_out = args.out.join("fluoro_frontal.png");
    demo::write_frontal_drr(data, &drr_out)?;
    println!(
        "wrote {} (simulated frontal fluoroscopy, LAO 0 / CRAN 0, organs overlaid)",
        drr_out.display()
    );
    let files = demo::write_data_files(&args.out, data)?;
    let story = demo::plan_everything(&args.out, &files, data, &Narrator(terminal));
    let ct_hu = data.ct.to_f32();
    let sweep = story.plans.first().and_then(|(_, plan)| {
        ultrasound_sweep(&ct_hu, &PlanPaths::from(plan), &args.out, terminal)
    });
    Ok(Written {
        files,
        story,
        ct_hu,
        sweep,
    })
}

/// Steps and skips on stdout (the demo's story), the rest as the terminal shows it.
struct Narrator<'a>(&'a dyn Observer);

impl Observer for Narrator<'_> {
    fn begin(&self, what: &str) {
        self.0.begin(what);
    }
    fn advance(&self, done: usize, total: usize) {
        self.0.advance(done, total);
    }
    fn end(&self) {
        self.0.end();
    }
    fn warn(&self, message: &str) {
        self.0.warn(message);
    }
    fn info(&self, message: &str) {
        println!("{message}");
    }
}

/// The data's geometry and structures, on stdout.
fn describe(data: &DemoData) {
    let g = data.ct.grid();
    let (lo, hi) = data.ct.min_max().unwrap_or((f64::NAN, f64::NAN));
    println!("data: {}", data.source);
    println!(
        "CT {:?} voxels, spacing {:?} mm, orientation {}, HU {lo} .. {hi}",
        g.dims(),
        g.spacing_mm(),
        g.orientation_code()
    );
    let stats = pinhole_volume::label_stats(&data.labels);
    println!("{} labelled structures:", stats.len());
    for s in stats.values() {
        let name = data.table.name(s.id).unwrap_or("?");
        let c = s.centroid_lps;
        println!(
            "  {:>4} {:<32} {:>9.1} mL  centroid LPS ({:.1}, {:.1}, {:.1})",
            s.id, name, s.volume_ml, c[0], c[1], c[2]
        );
    }
}

fn serve_with_replay(
    args: &DemoArgs,
    data: &DemoData,
    files: &DataFiles,
    mut story: Story,
    (ct_hu, sweep): (
        pinhole_volume::Volume<f32>,
        Option<pinhole_io::sequence::TrackedSequence>,
    ),
    terminal: &dyn Observer,
) -> anyhow::Result<()> {
    if story.plans.is_empty() {
        anyhow::bail!("no needle plan succeeded, so there is nothing to guide");
    }
    let (_, guided) = story.plans.remove(0);
    let guided = PlanPaths::from(&guided);
    ensure_web_built();
    let poses = pinhole_guidance::synthesize::insertion(&guided.planned_needle(), 20.0, 20.0);
    let port = args.igtl_port;
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(2));
        // The server may still be starting: retry until it accepts, then loop the insertion.
        let sent = pinhole_server::replay::send(
            &poses,
            "127.0.0.1",
            port,
            "NeedleTipToReference",
            Some(20.0),
            2,
        );
        if let Err(err) = sent {
            eprintln!("replay: {err} (retrying)");
        }
    });
    if let Some(sequence) = sweep {
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(2));
            // Back and forth through the sweep, as a hand rocking the probe.
            let sent = pinhole_server::replay::send_images(
                &sequence,
                "127.0.0.1",
                port,
                "Image_Reference",
                Some(US_REPLAY_FPS),
                2,
            );
            if let Err(err) = sent {
                eprintln!("ultrasound replay: {err} (retrying)");
            }
        });
    }
    let show = |p: &Path| Some(pinhole_pipeline::provenance::recorded_path(p));
    let session_data = SessionData {
        ct: &data.ct,
        labels: &data.labels,
        table: &data.table,
        plan: GuidancePlan::Needle(Box::new(guided)),
        registration: None,
        unnamed_labels: Default::default(),
        inputs: SessionInputs {
            ct: show(&files.ct),
            labels: show(&files.labels),
            labels_table: show(&files.table),
            plan: show(&args.out.join("kidney-biopsy").join("plan.json")),
            ..SessionInputs::default()
        },
    };
    let content = ViewerContent {
        title: "Pinhole demo: kidney biopsy, live replay".to_owned(),
        plans: story
            .plans
            .iter()
            .map(|(_, plan)| PlanPaths::from(plan))
            .collect(),
        routes: story.routes,
        overlays: story.overlays,
        gpu: false,
        risk_fields: pinhole_guidance::FieldTiming::Background,
    };
    println!(
        "\n== guidance server with a simulated needle insertion along the best kidney-biopsy path"
    );
    let session = build(&session_data, &content, terminal)?;
    if !args.no_open {
        let url = format!("http://127.0.0.1:{}/", args.http_port);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(3));
            let _ = std::process::Command::new("xdg-open").arg(&url).status();
        });
    }
    let config = pinhole_server::ServerConfig {
        igtl_addr: std::net::SocketAddr::from(([127, 0, 0, 1], args.igtl_port)),
        http_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], args.http_port))),
        static_dir: find_web_dist(),
        verbose: false,
        fusion_ct: Some(pinhole_server::fusion::FusionCt(std::sync::Arc::new(ct_hu))),
        ..Default::default()
    };
    super::serve::serve(session, config)
}

/// Frames per second of the demo's ultrasound replay.
const US_REPLAY_FPS: f64 = 15.0;

/// The demo's ultrasound step: a simulated convex probe on the skin at the guided path's
/// entry (pressed 10 mm in), its beam along the path (the needle in the image plane, as in an in-plane
/// ultrasound-guided puncture), rocked ±10° about its array in 21 frames; written as
/// `us_sweep.seq.mha` (Slicer opens it as a sequence) and replayed to the server as
/// tracked IMAGE frames, which the server fuses with the CT. `None` (and a note) when
/// the sweep cannot be simulated: the demo goes on without it.
fn ultrasound_sweep(
    ct: &pinhole_volume::Volume<f32>,
    plan: &PlanPaths,
    out: &Path,
    terminal: &dyn Observer,
) -> Option<pinhole_io::sequence::TrackedSequence> {
    let built = (|| -> anyhow::Result<_> {
        let path = plan.paths.first().context("no planned path")?;
        let beam = pinhole_volume::math::sub(path.target_lps, path.entry_lps);
        let depth_mm = (pinhole_volume::math::norm(beam) + 40.0).clamp(60.0, 200.0);
        // The array across the body's long axis unless the beam runs along it.
        let across = if beam[2].abs() < 0.9 * pinhole_volume::math::norm(beam) {
            [0.0, 0.0, 1.0]
        } else {
            [1.0, 0.0, 0.0]
        };
        let lateral = pinhole_volume::math::cross(beam, across);
        let simulator = pinhole_ultrasound::Simulator::new(pinhole_ultrasound::SimulationParams {
            depth_mm,
            width_px: 256,
            height_px: 256,
            ..Default::default()
        })?;
        // Pressed 10 mm into the skin, as a probe is (a face in air sees only the
        // air–skin reflection).
        let pressed = pinhole_volume::math::scale(beam, 10.0 / pinhole_volume::math::norm(beam));
        let pose = pinhole_ultrasound::ProbePose {
            centre_lps: pinhole_volume::math::add(path.entry_lps, pressed),
            beam_lps: beam,
            lateral_lps: lateral,
        };
        let mut poses = pinhole_ultrasound::sweep_poses(
            &pose,
            &pinhole_ultrasound::SweepMotion::Tilt { step_deg: 1.0 },
            21,
        )?;
        let back: Vec<_> = poses.iter().rev().skip(1).copied().collect();
        poses.extend(back);
        let (sequence, warnings) =
            super::us::simulate_sequence(&simulator, ct, &poses, US_REPLAY_FPS, terminal)?;
        let file = out.join("us_sweep.seq.mha");
        pinhole_io::sequence::write_sequence(&file, &sequence)?;
        println!(
            "\n== ultrasound: a simulated convex probe ({depth_mm:.0} mm deep) at the kidney-biopsy \
             entry, beam along the path, rocked ±10°: {} frames written to {} (Slicer: a \
             sequence); when served, replayed live as IMAGE Image_Reference at \
             {US_REPLAY_FPS} frames/s and fused with the CT (CTReslice, LabelReslice, the \
             needle's in-plane metrics)",
            sequence.frames.len(),
            file.display()
        );
        for w in warnings {
            terminal.warn(&format!("ultrasound sweep: {w}"));
        }
        Ok(sequence)
    })();
    match built {
        Ok(sequence) => Some(sequence),
        Err(e) => {
            println!("note: no ultrasound step ({e:#})");
            None
        }
    }
}

/// Builds the web viewer (`npm ci && npm run build` in `web/`) when it is missing and the
/// checkout and npm are there; otherwise the API still runs and the reason is printed.
fn ensure_web_built() {
    if find_web_dist().is_some() {
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

/// The built viewer (`web/dist`) next to the working directory or the executable
/// (`target/release/pinhole` → `web/dist` of the checkout), else in the checkout this
/// binary was built from (a `CARGO_TARGET_DIR` outside the checkout).
pub fn find_web_dist() -> Option<PathBuf> {
    let built = |p: &PathBuf| p.join("index.html").is_file();
    let from_cwd = std::env::current_dir().ok().map(|d| d.join("web/dist"));
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .map(|a| a.join("web/dist"))
            .find(|p| built(p))
    });
    let from_checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/dist");
    from_cwd
        .filter(built)
        .or(from_exe)
        .or(Some(from_checkout).filter(built))
}
