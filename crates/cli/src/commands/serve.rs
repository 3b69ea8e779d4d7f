//! `pinhole serve`: live needle guidance over OpenIGTLink and HTTP/WebSocket.
//! `pinhole replay`: send recorded or synthesized needle poses to a server.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use pinhole_server::guidance::{TargetZone, DEFAULT_TARGET_RADIUS_MM};
use pinhole_server::{replay, PlanFile, PlanSource, ServerConfig, Session};
use pinhole_volume::target::TargetSpec;

#[derive(Args)]
pub struct ServeArgs {
    /// CT (NIfTI, NRRD or a DICOM folder); its geometry is served to the viewer.
    #[arg(long)]
    ct: PathBuf,
    /// Label map (organ segmentation) on the CT's grid.
    #[arg(long)]
    labels: PathBuf,
    /// Label names: totalseg-v2 (default), totalseg-v1, or a CSV / Slicer colour table.
    #[arg(long)]
    labels_table: Option<String>,
    /// plan.json from `pinhole plan needle`: target, first path, risk groups.
    #[arg(long, conflicts_with = "target", required_unless_present = "target")]
    plan: Option<PathBuf>,
    /// Target only (no planned line): `label[:centroid|:deepest]`, `x,y,z` or `x,y,z,r` (LPS mm).
    #[arg(long, allow_hyphen_values = true)]
    target: Option<String>,
    /// Tracker registration `ReferenceToRAS`: ITK .tfm or a 4x4 row-major text file.
    #[arg(long)]
    registration: Option<PathBuf>,
    /// Device name of the tracked needle (TRANSFORM, POSITION or TDATA item).
    #[arg(long, default_value = "NeedleTipToReference")]
    needle_device: String,
    /// OpenIGTLink port.
    #[arg(long, default_value_t = 18944)]
    igtl_port: u16,
    /// HTTP / WebSocket port.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Address to listen on (default 127.0.0.1; anything else must be given explicitly).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Folder served at / over HTTP (the built web viewer; default: `web/dist` of the
    /// checkout when it has been built).
    #[arg(long, alias = "web")]
    static_dir: Option<PathBuf>,
    /// More plan.json files whose paths the viewer shows (the --plan one is always shown).
    #[arg(long)]
    show_plan: Vec<PathBuf>,
    /// Vessel routes (route.json from `pinhole plan vessel`) the viewer shows.
    #[arg(long)]
    route: Vec<PathBuf>,
    /// Volumes the viewer draws over the CT (e.g. an ablation's zone.seg.nrrd).
    #[arg(long)]
    overlay: Vec<PathBuf>,
    /// Render the viewer's simulated fluoroscopy on the GPU (wgpu; falls back to the CPU).
    #[arg(long)]
    gpu: bool,
    /// Title shown by the viewer.
    #[arg(long, default_value = "Pinhole guidance")]
    title: String,
    /// Accept messages whose CRC-64 does not match (PLUS does not check either).
    #[arg(long)]
    no_crc_check: bool,
    /// Log every connection.
    #[arg(long)]
    verbose: bool,
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let ct = super::load(&args.ct, None)?.volume;
    let ct_grid = ct.grid().clone();
    let labels = super::load(&args.labels, None)?
        .volume
        .to_labels()
        .with_context(|| format!("{} is not a label map", args.labels.display()))?;
    if !labels.grid().same_geometry(&ct_grid, 1e-3) {
        eprintln!(
            "warning: {} and {} have different geometry; guidance uses the label grid",
            args.labels.display(),
            args.ct.display()
        );
    }
    let (table_spec, table) = super::label_table(args.labels_table.as_deref())?;
    let names: BTreeMap<u32, String> = table.iter().map(|(id, e)| (id, e.name.clone())).collect();
    let source = match (&args.plan, &args.target) {
        (Some(plan), _) => PlanSource::Plan(PlanFile::read(plan)?),
        (None, Some(text)) => {
            let spec: TargetSpec = text.parse()?;
            let target = spec.resolve(&labels, |n| table.id_of(n))?;
            let zone = match &spec {
                TargetSpec::Label { .. } => TargetZone::Mask(Box::new(target.region.clone())),
                TargetSpec::Sphere {
                    center_lps,
                    radius_mm,
                } => TargetZone::Sphere {
                    center_lps: *center_lps,
                    radius_mm: *radius_mm,
                },
                TargetSpec::Point(p) => TargetZone::Sphere {
                    center_lps: *p,
                    radius_mm: DEFAULT_TARGET_RADIUS_MM,
                },
            };
            eprintln!("note: only --target given: no planned line, so lateral deviation and angle are reported as null");
            PlanSource::Target {
                target_lps: target.point_lps,
                zone,
                label_id: target.label_id,
                description: target.description,
            }
        }
        (None, None) => bail!("give --plan plan.json or --target"),
    };
    let registration = match &args.registration {
        Some(p) => Some(pinhole_server::pose::read_registration(p)?),
        None => None,
    };
    let inputs = serde_json::json!({
        "ct": args.ct.display().to_string(),
        "labels": args.labels.display().to_string(),
        "labels_table": table_spec,
        "plan": args.plan.as_ref().map(|p| p.display().to_string()),
        "target": args.target,
        "registration": args.registration.as_ref().map(|p| p.display().to_string()),
    });
    eprintln!("computing risk distance transforms ...");
    let plans: Vec<PathBuf> = args.plan.iter().chain(&args.show_plan).cloned().collect();
    let viewer = super::viewer::build(&super::viewer::ViewerInputs {
        title: args.title.clone(),
        ct: &ct,
        labels: &labels,
        table: &table,
        plans: &plans,
        routes: &args.route,
        overlays: &args.overlay,
        gpu: args.gpu,
    })?;
    drop(ct);
    let mut session = Session::new(&ct_grid, labels, names, source, registration, inputs);
    session.viewer = Some(viewer);
    for g in session.guidance.risk_groups() {
        eprintln!(
            "risk group {}: {} label(s) {:?}, clearance {} mm{}",
            g.name,
            g.labels.len(),
            g.labels,
            g.clearance_mm,
            if g.missing.is_empty() {
                String::new()
            } else {
                format!(" (absent: {})", g.missing.join(", "))
            }
        );
    }
    let ip = args.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let config = ServerConfig {
        igtl_addr: SocketAddr::new(ip, args.igtl_port),
        http_addr: Some(SocketAddr::new(ip, args.http_port)),
        static_dir: args
            .static_dir
            .clone()
            .or_else(super::viewer::find_web_dist),
        needle_device: args.needle_device.clone(),
        decode: pinhole_igtl::DecodeOptions {
            verify_crc: !args.no_crc_check,
            ..Default::default()
        },
        verbose: args.verbose,
        ..Default::default()
    };
    let stats = pinhole_server::serve_until_ctrl_c(session, config, |igtl, http| {
        eprintln!("Pinhole guidance server (NOT FOR CLINICAL USE)");
        eprintln!(
            "  OpenIGTLink: {igtl}  (needle: TRANSFORM {})",
            args.needle_device
        );
        if let Some(h) = http {
            println!("Viewer: http://{h}/");
            eprintln!("  HTTP API: http://{h}/api/session  WebSocket: ws://{h}/ws/guidance");
        }
        eprintln!("  Ctrl-C to stop");
    })?;
    eprintln!(
        "stopped: {} client(s) served, {} update(s), {} decode error(s)",
        stats.clients_total, stats.updates, stats.decode_errors
    );
    Ok(())
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Pose CSV (RAS mm): `t, m00..m33` (4x4 row-major) or `t, x, y, z, qx, qy, qz, qw`.
    #[arg(required_unless_present = "synthesize", conflicts_with = "synthesize")]
    file: Option<PathBuf>,
    /// Generate an insertion along plan.json's first path (entry to target, small drift).
    #[arg(long)]
    synthesize: Option<PathBuf>,
    /// Poses per second (default: the CSV's own times; 20 Hz when synthesizing).
    #[arg(long)]
    rate: Option<f64>,
    /// Length of a synthesized insertion, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 18944)]
    port: u16,
    /// Device name of the TRANSFORM messages.
    #[arg(long, default_value = "NeedleTipToReference")]
    device: String,
    /// OpenIGTLink header version to send (1 or 2).
    #[arg(long, default_value_t = 2)]
    header_version: u16,
    /// Write the poses as CSV (t + 4x4 row-major, RAS) instead of sending them.
    #[arg(long)]
    write_csv: Option<PathBuf>,
}

pub fn run_replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let (poses, rate) = match (&args.file, &args.synthesize) {
        (Some(f), _) => (replay::read_csv(f)?, args.rate),
        (None, Some(plan)) => {
            let plan = PlanFile::read(plan)?;
            let rate = args.rate.unwrap_or(20.0);
            (replay::synthesize(&plan, rate, args.duration), Some(rate))
        }
        (None, None) => bail!("give a pose CSV or --synthesize plan.json"),
    };
    if poses.is_empty() {
        bail!("no poses to send");
    }
    if let Some(out) = &args.write_csv {
        let mut text = String::from("# Not for clinical use. NeedleTipToReference poses, RAS mm\nt,m00,m01,m02,m03,m10,m11,m12,m13,m20,m21,m22,m23,m30,m31,m32,m33\n");
        for p in &poses {
            let cells: Vec<String> = std::iter::once(p.t_s)
                .chain(p.matrix.iter().flatten().copied())
                .map(|v| format!("{v}"))
                .collect();
            text.push_str(&cells.join(","));
            text.push('\n');
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {} poses to {}", poses.len(), out.display());
        return Ok(());
    }
    let summary = replay::send(
        &poses,
        &args.host,
        args.port,
        &args.device,
        rate,
        args.header_version,
    )?;
    println!(
        "{}",
        serde_json::json!({
            "note": "Not for clinical use.",
            "version": env!("CARGO_PKG_VERSION"),
            "sent": summary.sent,
            "metrics_received": summary.metrics_received,
            "last_metrics": summary.last_metrics.as_deref().and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()),
        })
    );
    Ok(())
}
