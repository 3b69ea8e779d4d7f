//! `pinhole serve`: live needle guidance over OpenIGTLink and HTTP/WebSocket.
//! `pinhole replay`: send recorded or synthesized needle poses, a session of a case
//! record, or a tracked ultrasound sequence, to a server.
//!
//! `pinhole serve --record SITE_DIR` records the live session into the site's case record
//! (`pinhole-record`) through the server's [`pinhole_server::SessionSink`]: see
//! [`RecordingSink`] and `docs/case-record.md`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use pinhole_guidance::{FieldTiming, Session, SessionInputs};
use pinhole_pipeline::inputs::label_table;
use pinhole_pipeline::needle::PlanPaths;
use pinhole_pipeline::session::{build, load_volumes, GuidancePlan, SessionData, ViewerContent};
use pinhole_pipeline::vessel::RouteReport;
use pinhole_pipeline::{Observer, Report};
use pinhole_record::{CaseId, CaseRecord, Push, SessionRecorder};
use pinhole_server::{replay, AlertChange, ReceivedPose, ServerConfig, SessionSink};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    volumes: super::VolumeArgs,
    /// plan.json from `pinhole plan needle`: target, first path, risk groups.
    #[arg(long, conflicts_with = "target", required_unless_present = "target")]
    plan: Option<PathBuf>,
    /// Target only (no planned line): `label[:centroid|:deepest|:lower-pole|:lower-pole-cortex]`,
    /// `x,y,z` or `x,y,z,r` (LPS mm).
    #[arg(long, allow_hyphen_values = true)]
    target: Option<String>,
    /// Tracker registration `ReferenceToRAS`: ITK .tfm or a 4x4 row-major text file.
    #[arg(long)]
    registration: Option<PathBuf>,
    /// Device name of the tracked needle (TRANSFORM, POSITION or TDATA item).
    #[arg(long, default_value = "NeedleTipToReference")]
    needle_device: String,
    /// Device name of a registration sent over OpenIGTLink (TRANSFORM, tracker
    /// Reference → RAS); every change is logged with its peer (`/api/session`
    /// `source_events`).
    #[arg(long, default_value = "ReferenceToRAS")]
    registration_device: String,
    /// Device name of tracked ultrasound frames (IMAGE, 8-bit, one slice, in the tracker
    /// Reference frame): each is answered with the CT and labels resliced on it (IMAGE
    /// CTReslice, LabelReslice) and the needle metrics gain `us_plane`.
    #[arg(long, default_value = "Image_Reference")]
    us_device: String,
    /// Probe calibration ImageToProbe (a PLUS device-set XML's CoordinateDefinitions, or
    /// a 4x4 / ITK transform file). With it, ultrasound frames are placed by the tracked
    /// probe (TRANSFORM --us-probe-device) times the calibration, not by the IMAGE's own
    /// matrix.
    #[arg(long)]
    us_calibration: Option<PathBuf>,
    /// Device name of the tracked probe's TRANSFORM (ProbeToReference), read with
    /// --us-calibration.
    #[arg(long, default_value = "ProbeToReference")]
    us_probe_device: String,
    /// The needle tip counts as in the ultrasound plane within this distance (mm).
    #[arg(long, value_parser = super::finite, default_value_t = 2.0)]
    us_in_plane_mm: f64,
    /// Beyond this distance of the tip from the ultrasound plane (mm) the metrics raise
    /// the out-of-plane alert and the guidance alert becomes at least "caution".
    #[arg(long, value_parser = super::finite, default_value_t = 2.0)]
    us_out_of_plane_alert_mm: f64,
    /// OpenIGTLink port.
    #[arg(long, default_value_t = 18944)]
    igtl_port: u16,
    /// HTTP / WebSocket port.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Address to listen on (default 127.0.0.1; anything else must be given explicitly).
    /// A non-loopback address requires an access token (--token, PINHOLE_TOKEN, or a
    /// random one printed once) and lets only --igtl-allow-peer addresses steer.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Access token for HTTP and WebSocket (default: PINHOLE_TOKEN; generated when
    /// --bind is not loopback). Browsers open `http://HOST:PORT/?token=…` once.
    #[arg(long)]
    token: Option<String>,
    /// Host name accepted in HTTP `Host` / WebSocket `Origin` besides localhost, loopback
    /// and the bound address (repeatable; DNS-rebinding protection).
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
    /// Peer address allowed to send needle poses, the registration and images over
    /// OpenIGTLink (repeatable; default: loopback peers only).
    #[arg(long = "igtl-allow-peer")]
    igtl_allow_peers: Vec<IpAddr>,
    /// Most OpenIGTLink clients at once (more are refused with a STATUS).
    #[arg(long, default_value_t = ServerConfig::default().max_igtl_clients,
          value_parser = count(1, 100_000))]
    max_igtl_clients: usize,
    /// Staleness bound: an OpenIGTLink client that stays behind the guidance stream this
    /// long (milliseconds) is dropped, so that it reconnects and resyncs.
    #[arg(long, default_value_t = millis(ServerConfig::default().igtl_max_lag),
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    igtl_max_lag_ms: u64,
    /// An OpenIGTLink client that stops in the middle of a message for this long
    /// (milliseconds) is disconnected.
    #[arg(long, default_value_t = millis(ServerConfig::default().igtl_partial_timeout),
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    igtl_partial_timeout_ms: u64,
    /// Disconnect an OpenIGTLink client that sends nothing for this long (seconds;
    /// default: on loopback idle clients are kept, counting towards --max-igtl-clients;
    /// with --bind beyond loopback 60 s, so that other hosts cannot hold every slot).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    igtl_idle_timeout_s: Option<u64>,
    /// Largest OpenIGTLink message body accepted (MiB); a larger one closes its client.
    #[arg(long, default_value_t = ServerConfig::default().decode.max_body_bytes >> 20,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_igtl_message_mib: u64,
    /// Largest control CT accepted by POST /api/control-ct (MiB of the file as sent).
    #[arg(long, default_value_t = ServerConfig::default().control_ct_max_bytes >> 20,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_control_ct_mib: u64,
    /// Message bodies all OpenIGTLink clients together may have in flight (MiB); at least
    /// --max-igtl-message-mib.
    #[arg(long, default_value_t = ServerConfig::default().max_buffered_body_bytes >> 20,
          value_parser = clap::value_parser!(u64).range(1..=16_384))]
    max_buffered_body_mib: u64,
    /// An OpenIGTLink or WebSocket client whose socket accepts nothing for this long
    /// (milliseconds) is disconnected.
    #[arg(long, default_value_t = millis(ServerConfig::default().write_timeout),
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    write_timeout_ms: u64,
    /// Most HTTP connections (WebSockets included) at once; more get a 503.
    #[arg(long, default_value_t = ServerConfig::default().max_http_connections,
          value_parser = count(1, 100_000))]
    max_http_connections: usize,
    /// An HTTP connection that sends no complete request head for this long
    /// (milliseconds; idle keep-alive connections included) is closed.
    #[arg(long, default_value_t = millis(ServerConfig::default().http_header_timeout),
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    http_header_timeout_ms: u64,
    /// Most `/api/drr` renders at once, server-wide (default: the CPU count); more get a
    /// 503. Each viewer has at most one.
    #[arg(long, default_value_t = ServerConfig::default().max_drr_renders,
          value_parser = count(1, 1024))]
    max_drr_renders: usize,
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
    /// Record the session into SITE_DIR/pinhole-cases.sqlite (created when absent): a new
    /// case with the plan's report, every needle pose as received (LPS, the engine's
    /// frame), every guidance update and each change of the alert (docs/case-record.md).
    #[arg(long, value_name = "SITE_DIR")]
    record: Option<PathBuf>,
    /// Label of the recorded case (default: the plan's or target's and the CT's file
    /// names and today's date). No patient data.
    #[arg(long, value_name = "TEXT", requires = "record")]
    case_label: Option<String>,
}
pub fn run(args: &ServeArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    // Settings first: a bad one is refused before the volumes are loaded.
    let config = args.server_config()?;
    // The record is opened (created) before the volumes are read: a site that is not
    // usable is refused at once. The case is created once the session is built.
    let record = match &args.record {
        Some(site) => Some(CaseRecord::open(site)?),
        None => None,
    };
    let volumes = &args.volumes;
    let (ct, labels, ct_warning) =
        load_volumes(&volumes.ct, &volumes.labels, volumes.not_ct(), terminal)?;
    let (table_spec, table) = label_table(volumes.labels_table.as_deref())?;
    let plan = match (&args.plan, &args.target) {
        (Some(plan), _) => GuidancePlan::Needle(Box::new(PlanPaths::read(plan)?)),
        (None, Some(text)) => GuidancePlan::Target(text.clone()),
        (None, None) => bail!("give --plan plan.json or --target"),
    };
    let registration = match &args.registration {
        Some(p) => Some(pinhole_io::transform::read_registration(p)?),
        None => None,
    };
    let show = |p: &PathBuf| Some(pinhole_pipeline::provenance::recorded_path(p));
    let data = SessionData {
        ct: &ct,
        labels: &labels,
        table: &table,
        plan,
        registration,
        unnamed_labels: volumes.unnamed_labels,
        inputs: SessionInputs {
            ct: show(&volumes.ct),
            labels: show(&volumes.labels),
            labels_table: Some(table_spec),
            plan: args.plan.as_ref().and_then(show),
            target: args.target.clone(),
            registration: args.registration.as_ref().and_then(show),
        },
    };
    let content = ViewerContent {
        title: args.title.clone(),
        plans: args
            .show_plan
            .iter()
            .map(|p| PlanPaths::read(p))
            .collect::<Result<_, _>>()?,
        routes: args
            .route
            .iter()
            .map(|p| RouteReport::read(p))
            .collect::<Result<_, _>>()?,
        overlays: args.overlay.clone(),
        gpu: args.gpu,
        risk_fields: FieldTiming::Background,
    };
    eprintln!(
        "risk distance fields are computed in the background: until they are ready, updates \
         list the pending groups (risk_groups_pending), report no nearest structure and are at \
         least a caution"
    );
    let mut session = build(&data, &content, terminal)?;
    // `/api/session` shows an overridden CT check with the session's other warnings.
    session.description.warnings.extend(ct_warning);
    // Kept for ultrasound fusion (CTReslice) and as the planning CT that control scans
    // (POST /api/control-ct, IMAGE ControlCT) are registered onto: the CT stays in memory
    // (as f32 HU, shared) while serving.
    let ct_hu = match ct {
        pinhole_io::image::AnyVolume::F32(v) => v,
        other => other.to_f32(),
    };
    let mut config = config;
    config.fusion_ct = Some(pinhole_server::fusion::FusionCt(std::sync::Arc::new(ct_hu)));
    let Some(record) = record else {
        return serve(session, config);
    };
    let sink = args.start_recording(&record, &session)?;
    config.session_sink = Some(sink.clone());
    let served = serve(session, config);
    sink.finish();
    served
}

/// Reads `ImageToProbe` and says on the terminal where it came from.
fn read_us_calibration(path: &std::path::Path) -> anyhow::Result<pinhole_io::transform::Mat4> {
    use pinhole_io::calibration::{read_calibration, CalibrationSource};
    let calibration = read_calibration(path)?;
    let from = match &calibration.source {
        CalibrationSource::Matrix => "a 4x4 matrix".to_owned(),
        CalibrationSource::PlusConfig {
            from,
            to,
            inverted,
            error_mm,
            ..
        } => format!(
            "the PLUS configuration's {from}To{to}{}{}",
            if *inverted { " (inverted)" } else { "" },
            error_mm.map_or(String::new(), |e| format!(", calibration error {e} mm"))
        ),
    };
    eprintln!(
        "ultrasound calibration ImageToProbe from {}: {from}",
        path.display()
    );
    Ok(calibration.image_to_probe)
}

/// A count flag within `min..=max` (clap names the flag when it is outside).
fn count(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..=max)
}

/// The idle timeout of OpenIGTLink clients when the server is reachable from other hosts
/// and none is given: idle connections from anywhere would otherwise fill
/// `--max-igtl-clients` for good and lock the tracker out.
const EXPOSED_IGTL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whole milliseconds of a default duration (for a flag's default).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ServeArgs {
    /// `--record`: a new case (with the plan's report) and its session, recorded by the
    /// sink returned.
    fn start_recording(
        &self,
        record: &CaseRecord,
        session: &Session,
    ) -> anyhow::Result<Arc<RecordingSink>> {
        let label = match &self.case_label {
            Some(label) => label.clone(),
            None => self.default_case_label(),
        };
        let case = record.create_case(&label, None)?;
        if let Some(plan) = &self.plan {
            let text = std::fs::read_to_string(plan)
                .map_err(|e| anyhow::anyhow!("{}: {e}", plan.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", plan.display()))?;
            record.add_report(case, "needle-plan", &json)?;
        }
        let recorder = record.start_session(case, &session.description)?;
        println!(
            "recording case {case} session {} into {}",
            recorder.session_id(),
            record.path().display()
        );
        Ok(Arc::new(RecordingSink::new(case, recorder)))
    }

    /// The plan's (or target's) and the CT's file names and today's date (UTC): never a
    /// full path, never patient data from the images.
    fn default_case_label(&self) -> String {
        let name = |p: &Path| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        let what = match (&self.plan, &self.target) {
            (Some(plan), _) => name(plan),
            (None, Some(target)) => format!("target {target}"),
            (None, None) => "guidance".to_owned(),
        };
        format!("{what} on {}, {}", name(&self.volumes.ct), utc_date())
    }

    /// Each OpenIGTLink device name given must be set and its own: a registration sent
    /// under the needle's name would be taken for a needle pose.
    fn check_device_names(&self) -> anyhow::Result<()> {
        let names = [
            ("--needle-device", &self.needle_device),
            ("--registration-device", &self.registration_device),
            ("--us-device", &self.us_device),
            ("--us-probe-device", &self.us_probe_device),
        ];
        for (i, (flag, name)) in names.iter().enumerate() {
            if name.trim().is_empty() {
                bail!("{flag}: give a device name");
            }
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                bail!("{flag} {name:?} is also {other}: each device needs its own name");
            }
        }
        Ok(())
    }

    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let ip = self.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let token = match &self.token {
            Some(t) => Some(t.clone()),
            None => std::env::var("PINHOLE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        if let Some(t) = &token {
            if t.len() < 16
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!("--token / PINHOLE_TOKEN: give at least 16 characters of [A-Za-z0-9_-]");
            }
        }
        let token = if ip.is_loopback() {
            token
        } else {
            eprintln!(
                "WARNING: --bind {ip} exposes the guidance server beyond this machine; HTTP and \
                 WebSocket require an access token, OpenIGTLink clients idle for {} s are \
                 disconnected, and only {} may steer over OpenIGTLink",
                self.igtl_idle_timeout_s
                    .unwrap_or(EXPOSED_IGTL_IDLE_TIMEOUT.as_secs()),
                if self.igtl_allow_peers.is_empty() {
                    "loopback peers (add --igtl-allow-peer for the tracker)".to_owned()
                } else {
                    format!("{:?}", self.igtl_allow_peers)
                }
            );
            Some(match token {
                Some(t) => t,
                None => pinhole_server::generate_token()?,
            })
        };
        if self.max_buffered_body_mib < self.max_igtl_message_mib {
            bail!(
                "--max-buffered-body-mib {} is less than --max-igtl-message-mib {}: a message \
                 that large could never be received",
                self.max_buffered_body_mib,
                self.max_igtl_message_mib
            );
        }
        self.check_device_names()?;
        let us_image_to_probe = match &self.us_calibration {
            Some(path) => Some(read_us_calibration(path)?),
            None => None,
        };
        for (flag, mm) in [
            ("--us-in-plane-mm", self.us_in_plane_mm),
            ("--us-out-of-plane-alert-mm", self.us_out_of_plane_alert_mm),
        ] {
            if !(mm > 0.0 && mm <= 100.0) {
                bail!("{flag} {mm}: expected a distance in mm, 0 < d ≤ 100");
            }
        }
        let defaults = ServerConfig::default();
        Ok(ServerConfig {
            us_in_plane: pinhole_ultrasound::InPlaneOptions {
                in_plane_tolerance_mm: self.us_in_plane_mm,
                alert_distance_mm: self.us_out_of_plane_alert_mm,
                ..defaults.us_in_plane
            },
            us_image_to_probe,
            us_probe_device: self.us_probe_device.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            token,
            igtl_allowed_peers: self.igtl_allow_peers.clone(),
            max_igtl_clients: self.max_igtl_clients,
            igtl_max_lag: Duration::from_millis(self.igtl_max_lag_ms),
            igtl_partial_timeout: Duration::from_millis(self.igtl_partial_timeout_ms),
            igtl_idle_timeout: self
                .igtl_idle_timeout_s
                .map(Duration::from_secs)
                .or((!ip.is_loopback()).then_some(EXPOSED_IGTL_IDLE_TIMEOUT))
                .or(defaults.igtl_idle_timeout),
            max_buffered_body_bytes: self.max_buffered_body_mib << 20,
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            max_http_connections: self.max_http_connections,
            http_header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            max_drr_renders: self.max_drr_renders,
            igtl_addr: SocketAddr::new(ip, self.igtl_port),
            http_addr: Some(SocketAddr::new(ip, self.http_port)),
            static_dir: self.static_dir.clone().or_else(super::demo::find_web_dist),
            needle_device: self.needle_device.clone(),
            registration_device: self.registration_device.clone(),
            us_device: self.us_device.clone(),
            decode: pinhole_igtl::DecodeOptions {
                verify_crc: !self.no_crc_check,
                max_body_bytes: self.max_igtl_message_mib << 20,
            },
            control_ct_max_bytes: self.max_control_ct_mib << 20,
            verbose: self.verbose,
            ..defaults
        })
    }
}

/// Prints the risk model, then serves until Ctrl-C.
pub fn serve(session: Session, config: ServerConfig) -> anyhow::Result<()> {
    for g in session.guidance.risk_groups() {
        let absent = if g.missing.is_empty() {
            String::new()
        } else {
            format!(" (absent: {})", g.missing.join(", "))
        };
        eprintln!(
            "risk group {}: {} label(s) {:?}, clearance {} mm{absent}",
            g.name,
            g.labels.len(),
            g.labels,
            g.clearance_mm,
        );
    }
    let needle_device = config.needle_device.clone();
    let registration_device = config.registration_device.clone();
    let token_query = config
        .token
        .as_ref()
        .map(|t| format!("?token={t}"))
        .unwrap_or_default();
    let stats = pinhole_server::serve_until_ctrl_c(session, config, |igtl, http| {
        eprintln!("Pinhole guidance server (NOT FOR CLINICAL USE)");
        eprintln!(
            "  OpenIGTLink: {igtl}  (needle: TRANSFORM {needle_device}; registration: TRANSFORM {registration_device})"
        );
        if let Some(h) = http {
            println!("Viewer: http://{h}/{token_query}");
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

/// Today's date on the UTC calendar, `YYYY-MM-DD`.
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date(i64::try_from(secs / 86_400).unwrap_or(0))
}

/// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `pinhole serve --record`: the server's [`SessionSink`] over a
/// [`pinhole_record::SessionRecorder`]. Every call only queues the sample (the recorder's
/// bounded queue; its writer thread commits at least every 250 ms) and returns, so the
/// OpenIGTLink reader tasks and the evaluator thread never wait on the disk. Times are
/// milliseconds since the session started. A full queue drops the sample (the recorder
/// counts it and writes a warning row); this prints a warning on the terminal, at most
/// once a second, as it does for a recorder that failed (the session goes on, unrecorded).
pub struct RecordingSink {
    case: CaseId,
    start: Instant,
    recorder: RwLock<Option<SessionRecorder>>,
    /// When the last warning of each kind (drops, failures) was printed, ms since `start`
    /// plus one (0: never).
    warned: [AtomicU64; 2],
}

/// Kinds of terminal warnings of [`RecordingSink`].
const WARN_DROPPED: usize = 0;
const WARN_FAILED: usize = 1;

impl RecordingSink {
    fn new(case: CaseId, recorder: SessionRecorder) -> Self {
        Self {
            case,
            start: Instant::now(),
            recorder: RwLock::new(Some(recorder)),
            warned: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn t_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    /// Runs `push` on the recorder (until [`finish`](Self::finish)) and reports what it
    /// could not record.
    fn push(
        &self,
        what: &str,
        push: impl FnOnce(&SessionRecorder) -> pinhole_record::Result<Push>,
    ) {
        let recorder = self.recorder.read().unwrap_or_else(|e| e.into_inner());
        let Some(recorder) = recorder.as_ref() else {
            return;
        };
        match push(recorder) {
            Ok(Push::Queued) => {}
            Ok(Push::Dropped { dropped_total }) => self.warn(
                WARN_DROPPED,
                format_args!(
                    "WARNING: case record queue full, {what} not recorded ({dropped_total} \
                     sample(s) dropped so far in this session)"
                ),
            ),
            Err(e) => self.warn(
                WARN_FAILED,
                format_args!("WARNING: case record: {what} not recorded: {e}"),
            ),
        }
    }

    /// Prints `text` unless a warning of this kind was printed less than a second ago.
    fn warn(&self, kind: usize, text: std::fmt::Arguments<'_>) {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.warned[kind].load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1000 {
            return;
        }
        if self.warned[kind]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            crate::terminal::note(&text.to_string());
        }
    }

    /// Commits the rest, marks the session ended and says what was recorded.
    pub fn finish(&self) {
        let recorder = self
            .recorder
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(recorder) = recorder else {
            return;
        };
        let session = recorder.session_id();
        match recorder.finish() {
            Ok(summary) => {
                let c = summary.committed;
                crate::terminal::note(&format!(
                    "recorded case {} session {session}: {} pose(s), {} guidance update(s), \
                     {} alert(s)",
                    self.case, c.poses, c.metrics, c.alerts
                ));
                if summary.dropped > 0 {
                    crate::terminal::note(&format!(
                        "WARNING: {} sample(s) were not recorded (the record's queue was full); \
                         the session's record says so (alerts of kind {})",
                        summary.dropped,
                        pinhole_record::DROPPED_ALERT_KIND
                    ));
                }
            }
            Err(e) => crate::terminal::note(&format!(
                "WARNING: case {} session {session} was not finished in the record: {e}",
                self.case
            )),
        }
    }
}

impl SessionSink for RecordingSink {
    fn pose(&self, pose: &ReceivedPose<'_>) {
        let t_ms = self.t_ms();
        self.push("a needle pose", |r| {
            r.pose(t_ms, pose.device, pose.pose_lps)
        });
    }

    fn metrics(&self, metrics: &pinhole_guidance::GuidanceMetrics) {
        let t_ms = self.t_ms();
        self.push("a guidance update", |r| r.metrics(t_ms, metrics));
    }

    fn alert(&self, change: &AlertChange<'_>) {
        let t_ms = self.t_ms();
        let mut message = change.text();
        if let Some(previous) = change.previous {
            message.push_str(&format!(" (was {})", previous.as_str()));
        }
        self.push("an alert", |r| {
            r.alert(t_ms, change.level().as_str(), &message)
        });
    }
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Pose CSV (RAS mm): `t, m00..m33` (4x4 row-major) or `t, x, y, z, qx, qy, qz, qw`.
    #[arg(required_unless_present_any = ["synthesize", "sequence", "case"],
          conflicts_with_all = ["synthesize", "sequence"])]
    file: Option<PathBuf>,
    /// Replay a recorded session of case ID (`pinhole serve --record`) from --site's
    /// record: its needle poses, converted back to RAS (the engine's LPS with x and y
    /// swapped: CT RAS, the registration applied), at their recorded times.
    #[arg(long, value_name = "ID", requires = "site",
          conflicts_with_all = ["file", "synthesize", "sequence"])]
    case: Option<CaseId>,
    /// The site folder holding pinhole-cases.sqlite (with --case).
    #[arg(long, value_name = "SITE_DIR", requires = "case")]
    site: Option<PathBuf>,
    /// The session of --case to replay (default: the case's only session).
    #[arg(long, value_name = "N", requires = "case")]
    session: Option<i64>,
    /// Generate an insertion along plan.json's first path (entry to target, small drift).
    #[arg(long, conflicts_with = "sequence")]
    synthesize: Option<PathBuf>,
    /// A tracked ultrasound sequence (`.seq.mha`, `.mhd`, `.seq.nrrd`; 8-bit) sent as
    /// IMAGE messages (--image-device), each placed by its ImageToReference, else by
    /// ProbeToReference · ImageToProbe; frames without either are skipped with a warning.
    #[arg(long, conflicts_with = "write_csv")]
    sequence: Option<PathBuf>,
    /// Device name of the IMAGE messages of --sequence (the server's --us-device).
    #[arg(long, default_value = "Image_Reference")]
    image_device: String,
    /// Poses or frames per second (default: the file's own times; 20 Hz when
    /// synthesizing; 30 frames per second for a sequence without timestamps).
    #[arg(value_parser = super::finite, long)]
    rate: Option<f64>,
    /// Length of a synthesized insertion, seconds.
    #[arg(value_parser = super::finite, long, default_value_t = 10.0)]
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
    if let Some(rate) = args.rate {
        pinhole_pipeline::limits::REPLAY_RATE_HZ.check(rate)?;
    }
    pinhole_pipeline::limits::REPLAY_DURATION_S.check(args.duration)?;
    if let Some(out) = &args.write_csv {
        let record = args
            .site
            .as_ref()
            .map(|s| s.join(pinhole_record::FILE_NAME));
        super::refuse_overwriting_inputs(
            &[
                args.file.as_deref(),
                args.synthesize.as_deref(),
                record.as_deref(),
            ],
            std::slice::from_ref(out),
        )?;
    }
    if let Some(path) = &args.sequence {
        let sequence = pinhole_io::sequence::read_sequence(path)?;
        for warning in &sequence.warnings {
            eprintln!("warning: {}: {warning}", path.display());
        }
        let summary = replay::send_images(
            &sequence,
            &args.host,
            args.port,
            &args.image_device,
            args.rate,
            args.header_version,
        )?;
        for warning in &summary.warnings {
            eprintln!("warning: {warning}");
        }
        println!("{}", serde_json::to_string(&summary.report())?);
        return Ok(());
    }
    let (poses, rate) = match (&args.file, &args.synthesize) {
        _ if args.case.is_some() => (recorded_poses(args)?, args.rate),
        (Some(f), _) => (pinhole_io::pose_csv::read(f)?, args.rate),
        (None, Some(plan)) => {
            let plan = PlanPaths::read(plan)?.planned_needle();
            let rate = args.rate.unwrap_or(20.0);
            let poses = pinhole_guidance::synthesize::insertion(&plan, rate, args.duration);
            (poses, Some(rate))
        }
        (None, None) => bail!(
            "give a pose CSV, --synthesize plan.json, --case ID --site SITE_DIR or --sequence FILE"
        ),
    };
    if poses.is_empty() {
        bail!("no poses to send");
    }
    if let Some(out) = &args.write_csv {
        pinhole_io::pose_csv::write(out, &poses)?;
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
    println!("{}", serde_json::to_string(&summary.report())?);
    Ok(())
}

/// `--case ID --site DIR [--session N]`: the session's poses as replay rows (RAS, t in
/// seconds since the session started; `replay::send` starts at the first).
fn recorded_poses(args: &ReplayArgs) -> anyhow::Result<Vec<replay::TimedPose>> {
    let (Some(case_id), Some(site)) = (args.case, &args.site) else {
        bail!("--case needs --site SITE_DIR");
    };
    let record = CaseRecord::open_existing(site)?;
    let case = record.case(case_id)?;
    let ids: Vec<i64> = case.sessions.iter().map(|s| s.id).collect();
    let session = match (args.session, ids.as_slice()) {
        (Some(n), _) if ids.contains(&n) => n,
        (Some(n), _) => bail!(
            "case {case_id} has no session {n} (its sessions: {})",
            list_ids(&ids)
        ),
        (None, [only]) => *only,
        (None, []) => bail!("case {case_id} has no recorded session"),
        (None, _) => bail!(
            "case {case_id} has {} sessions ({}): give --session N",
            ids.len(),
            list_ids(&ids)
        ),
    };
    let recorded = record.session_poses(session)?;
    let mut tools: Vec<&str> = recorded.iter().map(|p| p.tool.as_str()).collect();
    tools.sort_unstable();
    tools.dedup();
    if tools.len() > 1 {
        bail!(
            "case {case_id} session {session} holds poses of several tools ({}): export it \
             (pinhole cases export) and replay one tool's CSV",
            tools.join(", ")
        );
    }
    let poses: Vec<replay::TimedPose> = recorded.iter().map(pinhole_record::replay_pose).collect();
    let span_s = match (poses.first(), poses.last()) {
        (Some(a), Some(b)) => b.t_s - a.t_s,
        _ => 0.0,
    };
    eprintln!(
        "replaying case {case_id} session {session}: {} pose(s) of {} over {span_s:.1} s as \
         TRANSFORM {}",
        poses.len(),
        tools.first().copied().unwrap_or("no tool"),
        args.device
    );
    Ok(poses)
}

fn list_ids(ids: &[i64]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn config(extra: &[&str]) -> ServerConfig {
        let mut args = vec!["serve", "--ct", "ct.nii.gz", "--labels", "l.nii.gz"];
        args.extend(["--target", "liver", "--token", "0123456789abcdef0123"]);
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
            .expect("arguments parse")
            .serve
            .server_config()
            .expect("a configuration")
    }

    #[derive(Parser)]
    struct ReplayCli {
        #[command(flatten)]
        replay: ReplayArgs,
    }

    #[test]
    fn replay_case_needs_a_site_and_excludes_other_sources() {
        let parse = |args: &[&str]| {
            ReplayCli::try_parse_from(std::iter::once("replay").chain(args.iter().copied()))
        };
        let ok = parse(&["--case", "3", "--site", "s", "--session", "4"]).expect("parses");
        assert_eq!((ok.replay.case, ok.replay.session), (Some(3), Some(4)));
        for refused in [
            &["--case", "3"][..],
            &["--site", "s"],
            &["--case", "3", "--site", "s", "poses.csv"],
            &["--case", "3", "--site", "s", "--synthesize", "plan.json"],
            &["--case", "3", "--site", "s", "--sequence", "a.seq.mha"],
            &["--session", "2", "poses.csv"],
        ] {
            assert!(parse(refused).is_err(), "{refused:?} accepted");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_000), "2024-10-04");
        assert_eq!(utc_date().len(), 10);
    }

    #[test]
    fn device_names_must_be_set_and_distinct() {
        let refused = |extra: &[&str]| {
            let mut args = vec!["serve", "--ct", "ct.nii.gz", "--labels", "l.nii.gz"];
            args.extend(["--target", "liver"]);
            args.extend_from_slice(extra);
            let cli = Cli::try_parse_from(args).expect("arguments parse");
            format!("{:#}", cli.serve.server_config().expect_err("refused"))
        };
        let why = refused(&["--registration-device", "NeedleTipToReference"]);
        assert!(
            why.contains("--registration-device") && why.contains("--needle-device"),
            "{why}"
        );
        let why = refused(&["--us-probe-device", "ReferenceToRAS"]);
        assert!(why.contains("--us-probe-device"), "{why}");
        assert!(refused(&["--needle-device", " "]).contains("give a device name"));
        assert_eq!(config(&[]).registration_device, "ReferenceToRAS");
    }

    /// Regression (#25): beyond loopback, idle OpenIGTLink connections from any host held
    /// every client slot for good; now they time out unless told otherwise.
    #[test]
    fn idle_igtl_clients_time_out_when_the_server_is_exposed() {
        assert_eq!(
            config(&[]).igtl_idle_timeout,
            ServerConfig::default().igtl_idle_timeout
        );
        assert_eq!(
            config(&["--bind", "0.0.0.0"]).igtl_idle_timeout,
            Some(EXPOSED_IGTL_IDLE_TIMEOUT)
        );
        assert_eq!(
            config(&["--bind", "0.0.0.0", "--igtl-idle-timeout-s", "5"]).igtl_idle_timeout,
            Some(Duration::from_secs(5))
        );
    }
}
