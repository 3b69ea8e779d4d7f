//! `pinhole dicom listen`: a DICOM receiver (C-STORE SCP and C-ECHO, `pinhole-dicomnet`)
//! that stores instances as `<study>/<series>/<sop instance>.dcm` and prints one line
//! (or one JSON object) per event. `pinhole dicom push`: sends DICOM files to a peer
//! (C-STORE SCU) with a progress bar and a summary line (or the JSON report);
//! `pinhole dicom echo`: C-ECHO. Not for clinical use.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::dicom_web::{Node, WebOptions};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use pinhole_dicomnet::{
    Destination, Event, FileReport, Listener, ListenerConfig, Outcome, PushConfig, PushError,
    PushEvent,
};

use crate::terminal::{note, Terminal};

#[derive(Subcommand)]
pub enum DicomCommand {
    /// Receive DICOM instances from a scanner or PACS (C-STORE, C-ECHO) into a folder,
    /// one line per event; runs until the process is stopped (Ctrl-C). Not for clinical use.
    Listen(ListenArgs),
    /// Send DICOM files to a PACS or workstation (C-STORE), as stored (no transcoding);
    /// exits nonzero when any file was not stored. Not for clinical use.
    Push(PushArgs),
    /// Check that a DICOM node answers (C-ECHO).
    Echo(EchoArgs),
    /// Query a PACS (C-FIND, Study Root) for studies or series; prints a table (no
    /// patient name unless --show-patient) or JSON. Not for clinical use.
    Find(super::dicom_query::FindArgs),
    /// Retrieve one series from a PACS (C-MOVE) into a folder, received by an in-process
    /// listener the PACS knows as --ae-title at this host and --port; exits nonzero when
    /// any sub-operation failed. Not for clinical use.
    Pull(super::dicom_query::PullArgs),
    /// Write a label map on the grid of a DICOM CT series (a plan's label map, an
    /// ablation zone, a TotalSegmentator or Slicer segmentation) as a DICOM Segmentation
    /// referencing that series: `segmentation.dcm` and `dicom_seg.json` in --out. Every
    /// label must be named by the table. Not for clinical use.
    Seg(SegArgs),
    /// Write a needle plan (plan.json of `pinhole plan needle` on a DICOM CT series: target,
    /// paths, lengths, angles, clearances) or an ablation confirmation (confirmation.json of
    /// `pinhole confirm ablation` with the series as pre-ablation CT: minimal ablative
    /// margin, coverage, volumes, verdict, thinnest point) or vessel measurements
    /// (measurements.json of `pinhole measure vessel`: centerline, length, stenosis) as a
    /// DICOM Structured Report
    /// (TID 1500 Measurement Report, 3-D coordinates in the series' Frame of Reference);
    /// `measurements_sr.dcm` and `dicom_sr.json` in --out. Not for clinical use.
    Sr(SrArgs),
    /// Store a picture (a PNG: a plan's best.png, an ablation's zone.png, a DRR) as a DICOM
    /// Secondary Capture in the patient and study of a DICOM series, "NOT FOR CLINICAL
    /// USE" burned into its top rows; `capture.dcm` and `dicom_sc.json` in --out.
    Sc(ScArgs),
    /// Write de-identified copies of DICOM files (DICOM PS3.15 Basic Application Level
    /// Confidentiality Profile: identity removed, emptied or replaced, private attributes
    /// removed, UIDs replaced consistently) as `<study>/<series>/<instance>.dcm` under
    /// --out, with `dicom_deidentify.json`. Pixel data are not examined. Not for clinical
    /// use.
    Deidentify(DeidentifyArgs),
}

/// `--deidentify [--key-file FILE]` of the commands that send or write DICOM objects.
#[derive(Args)]
pub struct DeidentifyOption {
    /// De-identify (DICOM PS3.15 basic profile, as `pinhole dicom deidentify`): identity
    /// removed, emptied or replaced, private attributes removed, UIDs replaced with a
    /// keyed hash.
    #[arg(long)]
    deidentify: bool,
    /// With --deidentify: the file whose first line is the UID secret (the series'
    /// own, so that the UIDs match it); default PINHOLE_DEIDENTIFY_KEY, else a random
    /// key for this run.
    #[arg(long, value_name = "FILE", requires = "deidentify")]
    key_file: Option<PathBuf>,
}

impl DeidentifyOption {
    fn key(&self) -> anyhow::Result<Option<pinhole_pipeline::deidentify::KeySource>> {
        if !self.deidentify {
            return Ok(None);
        }
        key_source(self.key_file.as_deref()).map(Some)
    }
}

#[derive(Args)]
pub struct DeidentifyArgs {
    /// Output folder (created; must not hold the inputs).
    #[arg(long)]
    out: PathBuf,
    /// A file whose first line is the secret that replaces UIDs: the same secret, the
    /// same new UIDs (a Segmentation stays linked to its CT de-identified in another
    /// run). Default: PINHOLE_DEIDENTIFY_KEY, else a random key for this run.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    web: WebOptions,
    /// DICOM files, and folders searched recursively for DICOM files.
    #[arg(required = true, value_name = "FILES_OR_FOLDERS")]
    inputs: Vec<PathBuf>,
}

#[derive(Args)]
pub struct ScArgs {
    /// The folder of the DICOM series the picture belongs to.
    #[arg(long)]
    series: PathBuf,
    /// Which series of the folder, by SeriesInstanceUID (when it holds several).
    #[arg(long)]
    series_uid: Option<String>,
    /// The picture (PNG; grey or colour, 8 or 16 bits, alpha dropped).
    #[arg(long)]
    picture: PathBuf,
    /// The picture already shows "NOT FOR CLINICAL USE" at its top: store it unchanged.
    #[arg(long)]
    banner_already_present: bool,
    /// SeriesDescription of the capture (" NOT FOR CLINICAL USE" is appended).
    #[arg(long, default_value = "Pinhole picture")]
    description: String,
    /// The object is de-identified as written.
    #[command(flatten)]
    deidentify: DeidentifyOption,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SrArgs {
    /// The folder of the DICOM series the plan was made on.
    #[arg(long)]
    series: PathBuf,
    /// Which series of the folder, by SeriesInstanceUID (when it holds several).
    #[arg(long)]
    series_uid: Option<String>,
    /// plan.json of `pinhole plan needle`.
    #[arg(
        long,
        required_unless_present_any = ["confirmation", "measurements"],
        conflicts_with_all = ["confirmation", "measurements"]
    )]
    plan: Option<PathBuf>,
    /// How many of the plan's paths (best first).
    #[arg(long, default_value_t = 3)]
    paths: usize,
    /// confirmation.json of `pinhole confirm ablation` made with this series as the
    /// pre-ablation CT: margin, coverage, volumes, verdict and thinnest point.
    #[arg(long, conflicts_with = "measurements")]
    confirmation: Option<PathBuf>,
    /// measurements.json of `pinhole measure vessel` on this series' grid: centerline,
    /// length and stenosis (MLD, reference, % diameter / area, NASCET / ECST).
    #[arg(long)]
    measurements: Option<PathBuf>,
    /// SeriesDescription of the SR (" NOT FOR CLINICAL USE" is appended; default
    /// "Pinhole needle plan", "Pinhole ablation confirmation" or "Pinhole vessel
    /// measurements").
    #[arg(long)]
    description: Option<String>,
    /// The object is de-identified as written.
    #[command(flatten)]
    deidentify: DeidentifyOption,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SegArgs {
    /// The folder of the source DICOM series.
    #[arg(long)]
    series: PathBuf,
    /// Which series of the folder, by SeriesInstanceUID (when it holds several).
    #[arg(long)]
    series_uid: Option<String>,
    /// The label map (NIfTI, NRRD, .seg.nrrd) on the series' grid.
    #[arg(long)]
    labels: PathBuf,
    /// Label table: a CSV / Slicer colour table file, or `totalsegmentator` (v2 names).
    #[arg(long)]
    labels_table: Option<String>,
    /// SeriesDescription of the SEG (" NOT FOR CLINICAL USE" is appended).
    #[arg(long, default_value = "Pinhole segmentation")]
    description: String,
    /// The program that made the label map automatically (SegmentAlgorithmType
    /// AUTOMATIC with this name; default MANUAL).
    #[arg(long)]
    algorithm: Option<String>,
    /// The object is de-identified as written.
    #[command(flatten)]
    deidentify: DeidentifyOption,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListenArgs {
    /// This node's AE title (1-16 characters); associations calling another are rejected.
    #[arg(long, default_value = "PINHOLE")]
    ae_title: String,
    /// TCP port (0: a free port, printed at start).
    #[arg(long, default_value_t = 11112)]
    port: u16,
    /// Address to listen on (default loopback only; 0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Peer IP address allowed to associate (repeatable; default: any).
    #[arg(long = "allow")]
    allow: Vec<IpAddr>,
    /// Calling AE title allowed to associate (repeatable; default: any).
    #[arg(long = "allow-ae")]
    allow_ae: Vec<String>,
    /// Folder receiving `<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`.
    #[arg(long)]
    store: PathBuf,
    /// A series is reported complete after this many seconds without a new instance.
    #[arg(long, default_value_t = 5.0, value_parser = super::finite)]
    series_quiet_s: f64,
    /// Associations served at once; more are rejected (no resources).
    #[arg(long, default_value_t = pinhole_dicomnet::config::DEFAULT_MAX_ASSOCIATIONS)]
    max_associations: usize,
    /// Record each complete series in this site folder's case record
    /// (`pinhole-cases.sqlite`, created when absent; see `pinhole cases list`).
    #[arg(long, value_name = "SITE_DIR")]
    record: Option<PathBuf>,
    /// With --record: the case the series belong to (`pinhole cases list`); without it
    /// they are recorded as not assigned to a case.
    #[arg(long, requires = "record")]
    case: Option<i64>,
    /// Post each complete CT series to a running `pinhole serve` at this address
    /// (http://HOST:PORT) as a control CT: it is registered to the planning CT and its
    /// needle checked against the plan (`POST /api/control-ct`); newest first. The token
    /// of a server beyond loopback comes from PINHOLE_TOKEN.
    #[arg(long, value_name = "URL")]
    feed_control_ct: Option<super::feed::ServerUrl>,
    /// Run this command for each complete series (one at a time, in order), e.g.
    /// 'pinhole plan needle --ct {folder} --labels L … --out {folder}.plan'. Split like a
    /// shell splits words (no shell runs); placeholders {folder}, {series}, {study},
    /// {instances}, {modality}, {seg} (a DICOM Segmentation of the same study that
    /// references the series: the command waits until one has arrived); output to
    /// <study>/<series>.on-complete.log in the store.
    #[arg(long, value_name = "COMMAND")]
    on_complete: Option<super::on_complete::Template>,
    /// With --on-complete: the modalities it runs for (default CT; `any` for all).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "CT",
        requires = "on_complete"
    )]
    on_complete_modality: Vec<String>,
    /// Print events as JSON lines (an `event` field names each) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PushArgs {
    /// The receiving node: AE@HOST:PORT (C-STORE; e.g. PACS@10.0.0.5:104, IPv6
    /// PACS@[::1]:104) or a DICOMweb service root, http(s)://HOST[:PORT]/PATH (STOW-RS;
    /// files sent as they are, or with --deidentify; not --fill-blank-uids).
    #[arg(long)]
    to: Node,
    /// This node's AE title (1-16 characters).
    #[arg(long, default_value = "PINHOLE", value_parser = ae_title)]
    calling_ae: String,
    /// Fill blank SOP Class / Instance UIDs (from the file meta group) and Study / Series
    /// UIDs (derived from the Frame of Reference UID) of de-identified data sets instead
    /// of refusing them; re-encodes those data sets, pixel data kept; warns per file.
    #[arg(long)]
    fill_blank_uids: bool,
    /// Each data set is de-identified before it is sent; the files are not changed.
    #[command(flatten)]
    deidentify: DeidentifyOption,
    /// Bound on connecting and on each network read or write, in seconds.
    #[arg(long, default_value_t = 60.0, value_parser = super::finite)]
    timeout_s: f64,
    /// Print the report as JSON on stdout (the summary line goes to stderr).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    web: WebOptions,
    /// DICOM files, and folders searched recursively for DICOM files.
    #[arg(required = true, value_name = "FILES_OR_FOLDERS")]
    inputs: Vec<PathBuf>,
}

#[derive(Args)]
pub struct EchoArgs {
    /// The node to check, AE@HOST:PORT.
    #[arg(long)]
    to: Destination,
    /// This node's AE title (1-16 characters).
    #[arg(long, default_value = "PINHOLE", value_parser = ae_title)]
    calling_ae: String,
    /// Bound on connecting and on each network read or write, in seconds.
    #[arg(long, default_value_t = 30.0, value_parser = super::finite)]
    timeout_s: f64,
}

/// Checks an AE title for clap.
fn ae_title(s: &str) -> Result<String, String> {
    pinhole_dicomnet::config::check_ae_title(s)?;
    Ok(s.to_string())
}

pub fn run(command: &DicomCommand, terminal: &Terminal) -> anyhow::Result<()> {
    match command {
        DicomCommand::Listen(args) => listen(args),
        DicomCommand::Push(args) => push(args),
        DicomCommand::Echo(args) => echo(args),
        DicomCommand::Find(args) => super::dicom_query::find(args),
        DicomCommand::Pull(args) => super::dicom_query::pull(args),
        DicomCommand::Seg(args) => seg(args, terminal),
        DicomCommand::Sr(args) => sr(args, terminal),
        DicomCommand::Sc(args) => sc(args, terminal),
        DicomCommand::Deidentify(args) => deidentify(args, terminal),
    }
}

/// Environment variable holding the de-identification secret.
const KEY_VARIABLE: &str = "PINHOLE_DEIDENTIFY_KEY";

/// The UID key: `key_file`'s first line, else [`KEY_VARIABLE`], else random for this run.
fn key_source(key_file: Option<&Path>) -> anyhow::Result<pinhole_pipeline::deidentify::KeySource> {
    use pinhole_pipeline::deidentify::KeySource;
    let (secret, origin) = match key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the key file {}", path.display()))?;
            let line = text.lines().next().unwrap_or_default().trim().to_owned();
            (
                line,
                format!(
                    "key file {}",
                    pinhole_pipeline::provenance::recorded_path(path)
                ),
            )
        }
        None => match std::env::var(KEY_VARIABLE) {
            Ok(value) => (value.trim().to_owned(), KEY_VARIABLE.to_owned()),
            Err(_) => return Ok(KeySource::Random),
        },
    };
    if secret.chars().count() < 8 {
        bail!("the de-identification secret ({origin}) must be at least 8 characters");
    }
    Ok(KeySource::Secret { secret, origin })
}

fn deidentify(args: &DeidentifyArgs, terminal: &Terminal) -> anyhow::Result<()> {
    use pinhole_pipeline::deidentify::{run, DeidentifyRequest, REPORT_FILE};
    let files = dicom_files(&args.inputs)?;
    let out = std::fs::canonicalize(&args.out).unwrap_or_else(|_| args.out.clone());
    if let Some(inside) = args
        .inputs
        .iter()
        .find(|input| std::fs::canonicalize(input).is_ok_and(|i| i.is_dir() && out.starts_with(&i)))
    {
        bail!(
            "--out {} is inside the input folder {}: the copies would be read as inputs next time; choose a folder outside it",
            args.out.display(),
            inside.display()
        );
    }
    let request = DeidentifyRequest {
        files,
        out_dir: args.out.clone(),
        key: key_source(args.key_file.as_deref())?,
    };
    super::marking_failure(&args.out, "dicom deidentify", || {
        let report = run(&request, terminal)?;
        if args.json {
            println!("{}", pinhole_pipeline::report::to_json(&report)?);
        } else {
            print!("{}", report.to_text());
            println!("wrote {} ({REPORT_FILE})", args.out.display());
            println!("{}", pinhole_pipeline::DISCLAIMER);
        }
        Ok(())
    })
}

fn sr(args: &SrArgs, terminal: &Terminal) -> anyhow::Result<()> {
    use pinhole_pipeline::dicom_export::{
        run_sr, SrExportRequest, SrSource, SR_FILE, SR_REPORT_FILE,
    };
    let chosen = (&args.plan, &args.confirmation, &args.measurements);
    let (source, input, description) = match chosen {
        (None, None, Some(measurements)) => (
            SrSource::VesselMeasurements(measurements.clone()),
            measurements,
            "Pinhole vessel measurements",
        ),
        (Some(plan), None, None) => (
            SrSource::NeedlePlan {
                plan: plan.clone(),
                paths: args.paths,
            },
            plan,
            "Pinhole needle plan",
        ),
        (None, Some(confirmation), None) => (
            SrSource::AblationConfirmation(confirmation.clone()),
            confirmation,
            "Pinhole ablation confirmation",
        ),
        _ => anyhow::bail!("give one of --plan, --confirmation and --measurements"),
    };
    let request = SrExportRequest {
        series_dir: args.series.clone(),
        series_uid: args.series_uid.clone(),
        source,
        series_description: args.description.clone().unwrap_or(description.into()),
        out_dir: args.out.clone(),
        deidentify: args.deidentify.key()?,
    };
    let outputs = Outputs {
        command: "dicom sr",
        dir: &args.out,
        inputs: [&args.series, input],
        files: [SR_FILE, SR_REPORT_FILE],
        json: args.json,
    };
    outputs.export(|| run_sr(&request, terminal), |r| r.to_text())
}

fn sc(args: &ScArgs, terminal: &Terminal) -> anyhow::Result<()> {
    use pinhole_pipeline::dicom_export::{run_sc, ScExportRequest, SC_FILE, SC_REPORT_FILE};
    let request = ScExportRequest {
        series_dir: args.series.clone(),
        series_uid: args.series_uid.clone(),
        picture: args.picture.clone(),
        banner_already_present: args.banner_already_present,
        series_description: args.description.clone(),
        out_dir: args.out.clone(),
        deidentify: args.deidentify.key()?,
    };
    let outputs = Outputs {
        command: "dicom sc",
        dir: &args.out,
        inputs: [&args.series, &args.picture],
        files: [SC_FILE, SC_REPORT_FILE],
        json: args.json,
    };
    outputs.export(|| run_sc(&request, terminal), |r| r.to_text())
}

fn seg(args: &SegArgs, terminal: &Terminal) -> anyhow::Result<()> {
    use pinhole_pipeline::dicom_export::{run, SegExportRequest, REPORT_FILE, SEG_FILE};
    let request = SegExportRequest {
        series_dir: args.series.clone(),
        series_uid: args.series_uid.clone(),
        labels: args.labels.clone(),
        labels_table: args.labels_table.clone(),
        series_description: args.description.clone(),
        algorithm_name: args.algorithm.clone(),
        out_dir: args.out.clone(),
        deidentify: args.deidentify.key()?,
    };
    let outputs = Outputs {
        command: "dicom seg",
        dir: &args.out,
        inputs: [&args.series, &args.labels],
        files: [SEG_FILE, REPORT_FILE],
        json: args.json,
    };
    outputs.export(|| run(&request, terminal), |r| r.to_text())
}

/// A DICOM export's output folder (`seg`, `sr`, `sc`): its object and its report.
struct Outputs<'a> {
    command: &'a str,
    dir: &'a Path,
    /// The source series and the exported input: never overwritten.
    inputs: [&'a PathBuf; 2],
    /// The DICOM object's and the report's file names.
    files: [&'a str; 2],
    json: bool,
}

impl Outputs<'_> {
    /// Refuses outputs that would overwrite an input, runs the export (a failure is marked
    /// in the folder), then prints the report's JSON, or its summary, the folder and the
    /// disclaimer.
    fn export<R: pinhole_pipeline::Report>(
        &self,
        run: impl FnOnce() -> pinhole_pipeline::Result<R>,
        summary: impl FnOnce(&R) -> String,
    ) -> anyhow::Result<()> {
        super::marking_failure(self.dir, self.command, || {
            super::refuse_overwriting_inputs(
                &self.inputs.map(|p| Some(p.as_path())),
                &super::folder_files(self.dir, &self.files),
            )?;
            let report = run()?;
            if self.json {
                println!("{}", pinhole_pipeline::report::to_json(&report)?);
            } else {
                print!("{}", summary(&report));
                println!("wrote {}", self.dir.display());
                println!("{}", pinhole_pipeline::DISCLAIMER);
            }
            Ok(())
        })
    }
}

fn push_config(to: &Destination, calling_ae: &str, timeout_s: f64) -> anyhow::Result<PushConfig> {
    let mut config = PushConfig::new(calling_ae, to.ae_title.clone(), to.addr());
    config.timeout = Duration::try_from_secs_f64(timeout_s)
        .with_context(|| format!("--timeout-s {timeout_s}"))?;
    config.validate()?;
    Ok(config)
}

fn echo(args: &EchoArgs) -> anyhow::Result<()> {
    let config = push_config(&args.to, &args.calling_ae, args.timeout_s)?;
    let elapsed = pinhole_dicomnet::echo(&config)?;
    println!(
        "C-ECHO {}: success in {:.1} ms",
        args.to,
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

fn push(args: &PushArgs) -> anyhow::Result<()> {
    let to = match &args.to {
        Node::Web(url) => return push_web(args, url),
        Node::Dimse(to) => to,
    };
    args.web.check_unused(&args.to)?;
    let mut config = push_config(to, &args.calling_ae, args.timeout_s)?;
    config.fill_blank_uids = args.fill_blank_uids;
    let key = args.deidentify.key()?;
    config.deidentify = key.as_ref().map(|k| k.key());
    let files = dicom_files(&args.inputs)?;
    eprintln!("Pinhole DICOM push (NOT FOR CLINICAL USE)");
    eprintln!(
        "  {} file(s) to {} as {}{}",
        files.len(),
        args.to,
        args.calling_ae,
        if args.fill_blank_uids {
            ", filling blank UIDs"
        } else {
            ""
        }
    );
    if let Some(key) = &key {
        eprintln!(
            "  de-identified before sending (DICOM PS3.15 basic profile; UID key {})",
            key.describe()
        );
    }
    // Hidden when stderr is not a terminal.
    let bar = super::dicom_web::files_bar(files.len(), "pushing");
    let result = pinhole_dicomnet::push_files(&config, &files, |event| match event {
        PushEvent::Sent { file, .. } | PushEvent::NotSent { file, .. } => {
            if !matches!(file.outcome, Outcome::Success) {
                bar.suspend(|| eprintln!("{}", file_line(&file)));
            }
            bar.inc(1);
        }
        _ => {}
    });
    bar.finish_and_clear();
    let (mut report, ended) = match result {
        Ok(report) => (report, None),
        Err(PushError::Aborted {
            peer,
            reason,
            report,
        }) => (
            *report,
            Some(format!("association with {peer} ended early: {reason}")),
        ),
        Err(e) => return Err(e.into()),
    };
    for file in &mut report.files {
        file.name = pinhole_pipeline::provenance::recorded_path(&file.path);
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    super::dicom_web::print_push_report(
        || serde_json::to_string_pretty(&report),
        &report.summary(),
        args.json,
    )?;
    if let Some(ended) = ended {
        bail!(ended);
    }
    super::dicom_web::all_stored(report.stored(), report.total)
}

/// `push` to a DICOMweb root: STOW-RS of the files as they are.
fn push_web(args: &PushArgs, url: &str) -> anyhow::Result<()> {
    if args.fill_blank_uids {
        bail!(
            "--fill-blank-uids is not offered with a DICOMweb destination: de-identify \
             (--deidentify fills blank identity UIDs too), or push over DIMSE (AE@HOST:PORT)"
        );
    }
    let config = args.web.config(url, args.timeout_s)?;
    let key = args.deidentify.key()?;
    let files = dicom_files(&args.inputs)?;
    eprintln!("Pinhole DICOM push (NOT FOR CLINICAL USE)");
    eprintln!("  {} file(s) to {url} (STOW-RS)", files.len());
    if let Some(key) = &key {
        eprintln!(
            "  de-identified before sending (DICOM PS3.15 basic profile; UID key {})",
            key.describe()
        );
    }
    let key = key.as_ref().map(|k| k.key());
    super::dicom_web::push(&config, &files, key.as_ref(), args.json, &file_line)
}

/// One line on a file that was not plainly stored.
fn file_line(file: &FileReport) -> String {
    let what = match file.outcome {
        Outcome::Success => "stored",
        Outcome::Warning => "stored with a warning",
        Outcome::Failure => "failed",
        Outcome::NotSent => "not sent",
    };
    let name = pinhole_pipeline::provenance::recorded_path(&file.path);
    let detail = match (&file.error, file.status, &file.status_text) {
        (Some(error), _, _) => error.clone(),
        (None, Some(status), Some(text)) => format!("status 0x{status:04X} ({text})"),
        _ => String::new(),
    };
    let comment = file
        .comment
        .as_ref()
        .filter(|_| file.outcome == Outcome::Warning)
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    format!("{what}: {name}: {detail}{comment}")
}

/// The files to push: files as given (a non-DICOM one is reported by the push), and
/// the DICOM Part-10 files under folders, recursively, in name order (symbolic links
/// to folders are not followed); other files there are skipped with a warning.
fn dicom_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input)
            .with_context(|| format!("{}: no such file or folder", input.display()))?;
        if !meta.is_dir() {
            files.push(input.clone());
            continue;
        }
        let mut found = Vec::new();
        let mut folders = vec![input.clone()];
        while let Some(folder) = folders.pop() {
            let entries = std::fs::read_dir(&folder)
                .with_context(|| format!("reading folder {}", folder.display()))?;
            for entry in entries {
                let entry =
                    entry.with_context(|| format!("reading folder {}", folder.display()))?;
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    folders.push(path);
                } else if path.is_file() {
                    found.push(path);
                }
            }
        }
        found.sort();
        let before = files.len();
        for path in found {
            match skip_reason(&path) {
                None => files.push(path),
                Some(why) => eprintln!("warning: skipped {}: {why}", path.display()),
            }
        }
        if files.len() == before {
            eprintln!("warning: no DICOM files in {}", input.display());
        }
    }
    if files.is_empty() {
        bail!("no DICOM files in the inputs given");
    }
    Ok(files)
}

/// Why a file found in a folder is not pushed: not a DICOM Part-10 file, a DICOMDIR,
/// or a file still being written by `pinhole dicom listen`.
fn skip_reason(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    if name.contains(pinhole_io::atomic::TEMP_MARKER) {
        return Some("a temporary file being written".into());
    }
    if name.eq_ignore_ascii_case("DICOMDIR") {
        return Some("a DICOMDIR (an index of the files, not an instance)".into());
    }
    let mut head = [0u8; 132];
    let mut read = 0;
    match std::fs::File::open(path) {
        Ok(mut file) => {
            use std::io::Read;
            while read < head.len() {
                match file.read(&mut head[read..]) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) => return Some(format!("cannot read: {e}")),
                }
            }
        }
        Err(e) => return Some(format!("cannot open: {e}")),
    }
    let part10 = (read == 132 && &head[128..132] == b"DICM") || head.starts_with(b"DICM");
    (!part10).then(|| "not a DICOM Part-10 file".into())
}

fn listen(args: &ListenArgs) -> anyhow::Result<()> {
    let series_quiet = Duration::try_from_secs_f64(args.series_quiet_s)
        .with_context(|| format!("--series-quiet-s {}", args.series_quiet_s))?;
    let mut config = ListenerConfig::new(
        args.ae_title.clone(),
        SocketAddr::new(args.bind, args.port),
        args.store.clone(),
    );
    config.allowed_peers = (!args.allow.is_empty()).then(|| args.allow.clone());
    config.calling_ae_allowed = (!args.allow_ae.is_empty()).then(|| args.allow_ae.clone());
    config.series_quiet = series_quiet;
    config.max_associations = args.max_associations;
    let mut record = args
        .record
        .as_deref()
        .map(|site| SeriesRecord::open(site, args.case))
        .transpose()?;
    let listener = Listener::bind(config)?;
    note("Pinhole DICOM receiver (NOT FOR CLINICAL USE)");
    note(&format!(
        "  AE title {} on {}, storing into {}",
        args.ae_title,
        listener.local_addr(),
        args.store.display()
    ));
    if let Some(record) = &record {
        note(&format!(
            "  recording complete series in {}",
            record.describe()
        ));
    }
    let json = args.json;
    let feed = args.feed_control_ct.clone().map(|url| {
        note(&format!(
            "  posting complete CT series to {url}/api/control-ct as control scans"
        ));
        let token = std::env::var("PINHOLE_TOKEN").ok();
        super::feed::ControlCtFeed::start(url, token, move |line, warning| {
            if warning {
                print_event(&Event::Warning { message: line }, json);
            } else {
                note(&line);
            }
        })
    });
    let on_complete = args.on_complete.clone().map(|template| {
        let modalities: Vec<String> = args
            .on_complete_modality
            .iter()
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        note(&format!(
            "  running a command for each complete {} series (--on-complete)",
            modalities.join(" / ")
        ));
        super::on_complete::OnComplete::start(template, modalities, move |line, warning| {
            if warning {
                print_event(&Event::Warning { message: line }, json);
            } else {
                note(&line);
            }
        })
    });
    note("  C-STORE and C-ECHO; runs until stopped (Ctrl-C)");
    listener.run(move |event: Event| {
        print_event(&event, json);
        if let Event::SeriesComplete {
            study_uid,
            series_uid,
            instances,
            folder,
        } = &event
        {
            if let Some(record) = record.as_mut() {
                match record.add(study_uid, series_uid, *instances, folder) {
                    Ok(row) => note(&format!(
                        "recorded series {series_uid} in the case record (study {row})"
                    )),
                    Err(message) => print_event(&Event::Warning { message }, json),
                }
            }
            if let Some(feed) = &feed {
                feed.feed(series_uid, folder);
            }
            if let Some(on_complete) = &on_complete {
                on_complete.run(super::on_complete::CompleteSeries {
                    study_uid: study_uid.clone(),
                    series_uid: series_uid.clone(),
                    instances: *instances,
                    folder: folder.clone(),
                });
            }
        }
    });
    Ok(())
}

/// One event on stdout: a JSON line or text (errors writing are ignored: the listener
/// goes on when nobody reads).
fn print_event(event: &Event, json: bool) {
    let line = if json {
        match serde_json::to_string(event) {
            Ok(line) => line,
            Err(e) => return note(&format!("warning: event not printable as JSON: {e}")),
        }
    } else {
        event.to_string()
    };
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// The case record that `dicom listen --record` adds complete series to.
struct SeriesRecord {
    record: pinhole_record::CaseRecord,
    case: Option<i64>,
}

impl SeriesRecord {
    /// Opens (or creates) the site's record; a `case` that is not in it is refused.
    fn open(site: &Path, case: Option<i64>) -> anyhow::Result<Self> {
        let record = pinhole_record::CaseRecord::open(site)?;
        if let Some(id) = case {
            record.case(id)?;
        }
        Ok(Self { record, case })
    }

    fn describe(&self) -> String {
        match self.case {
            Some(id) => format!("case {id} of {}", self.record.path().display()),
            None => format!("{} (not assigned to a case)", self.record.path().display()),
        }
    }

    /// Records a complete series (its modality read from the stored files): its row in
    /// the record's studies; the error says what was not recorded and why.
    fn add(
        &mut self,
        study_uid: &str,
        series_uid: &str,
        instances: usize,
        folder: &Path,
    ) -> Result<i64, String> {
        let not_recorded =
            |why: String| format!("series {series_uid} not recorded in the case record: {why}");
        let modality = pinhole_io::dicom::list_series(folder)
            .map_err(|e| not_recorded(pinhole_io::error::error_chain(&e)))?
            .into_iter()
            .find(|s| s.series_uid == series_uid)
            .map_or_else(String::new, |s| s.modality);
        let study = pinhole_record::NewStudy {
            study_uid: study_uid.to_owned(),
            series_uid: series_uid.to_owned(),
            modality,
            folder: folder.to_path_buf(),
            instances: instances as u64,
        };
        self.record
            .add_study(self.case, &study)
            .map_err(|e| not_recorded(pinhole_io::error::error_chain(&e)))
    }
}
