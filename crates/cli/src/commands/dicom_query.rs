//! `pinhole dicom find`: queries a PACS (C-FIND, Study Root) and prints a table of the
//! matching studies or series (or JSON). `pinhole dicom pull`: retrieves one series
//! (C-MOVE) into a folder, receiving it with an in-process `pinhole-dicomnet` listener
//! that the PACS must know as the move destination. With an `http(s)://` DICOMweb root
//! as `--from`, QIDO-RS and WADO-RS do the same (`super::dicom_web`). Not for clinical
//! use.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::dicom_web::{Node, WebOptions};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use pinhole_dicomnet::query::{keyword, tags, Tag, DEFAULT_MAX_MATCHES};
use pinhole_dicomnet::{
    Destination, Event, Level, Listener, ListenerConfig, Match, MoveReport, QueryConfig, QueryError,
};

/// Patient-identifying attributes: asked for and printed only with `--show-patient`.
const PATIENT_TAGS: [Tag; 3] = [
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
];

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FindLevel {
    Study,
    Series,
}

#[derive(Args)]
pub struct FindArgs {
    /// The PACS to query: AE@HOST:PORT (C-FIND; it must know this node's --calling-ae)
    /// or a DICOMweb service root, http(s)://HOST[:PORT]/PATH (QIDO-RS).
    #[arg(long)]
    from: Node,
    /// List studies or series.
    #[arg(long, value_enum, default_value_t = FindLevel::Study)]
    level: FindLevel,
    /// Match this Patient ID (wildcards * and ? allowed).
    #[arg(long)]
    patient_id: Option<String>,
    /// Match this Study Instance UID.
    #[arg(long)]
    study_uid: Option<String>,
    /// Match this modality (Modality of a series; Modalities in Study of a study).
    #[arg(long)]
    modality: Option<String>,
    /// Ask for and print the patient's name, ID and birth date (not shown by default).
    #[arg(long)]
    show_patient: bool,
    /// This node's AE title (1-16 characters).
    #[arg(long, default_value = "PINHOLE", value_parser = ae_title)]
    calling_ae: String,
    /// Bound on connecting and on each network read or write, in seconds.
    #[arg(long, default_value_t = 30.0, value_parser = super::finite)]
    timeout_s: f64,
    /// Most matches accepted; one more cancels the query (C-CANCEL) with an error.
    #[arg(long, default_value_t = DEFAULT_MAX_MATCHES)]
    max_matches: usize,
    /// Print the matches as JSON (keyword -> value) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    web: WebOptions,
}

#[derive(Args)]
pub struct PullArgs {
    /// The PACS holding the series: AE@HOST:PORT (C-MOVE; it must know --ae-title with
    /// this host's address and --port, its move destination) or a DICOMweb service
    /// root, http(s)://HOST[:PORT]/PATH (WADO-RS; no listener, the --ae-title, --port,
    /// --bind and --allow options do not apply).
    #[arg(long)]
    from: Node,
    /// The series to retrieve.
    #[arg(long)]
    series_uid: String,
    /// Its study (found with a C-FIND when not given).
    #[arg(long)]
    study_uid: Option<String>,
    /// Folder receiving `<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`.
    #[arg(long)]
    store: PathBuf,
    /// This node's AE title: the calling AE of the C-FIND / C-MOVE, the move
    /// destination and the listener's title.
    #[arg(long, default_value = "PINHOLE", value_parser = ae_title)]
    ae_title: String,
    /// Retrieve with C-GET instead of C-MOVE: the PACS sends the series back on the
    /// query's own association (no listener, nothing connects back; for a PACS that
    /// cannot reach this host or does not know its address). --port, --bind and --allow
    /// then do not apply.
    #[arg(long)]
    get: bool,
    /// TCP port the listener receives the series on.
    #[arg(long, default_value_t = 11112)]
    port: u16,
    /// Address the listener binds (default: every interface, since the PACS connects
    /// back; only the PACS's addresses may associate, see --allow).
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Peer address allowed to send the series (repeatable; default: the addresses of
    /// the --from host).
    #[arg(long = "allow")]
    allow: Vec<IpAddr>,
    /// Bound on connecting, on each network read or write and on the wait between two
    /// C-MOVE responses, in seconds.
    #[arg(long, default_value_t = 60.0, value_parser = super::finite)]
    timeout_s: f64,
    /// Print the C-MOVE (or WADO-RS) report and the folder as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    web: WebOptions,
}

/// Checks an AE title for clap.
fn ae_title(s: &str) -> Result<String, String> {
    pinhole_dicomnet::config::check_ae_title(s)?;
    Ok(s.to_string())
}

fn query_config(
    from: &Destination,
    calling_ae: &str,
    timeout_s: f64,
) -> anyhow::Result<QueryConfig> {
    let mut config = QueryConfig::new(calling_ae, from.ae_title.clone(), from.addr());
    config.timeout = Duration::try_from_secs_f64(timeout_s)
        .with_context(|| format!("--timeout-s {timeout_s}"))?;
    config.validate()?;
    Ok(config)
}

/// The columns of the table (after the patient's, with `--show-patient`).
fn columns(level: FindLevel) -> Vec<Tag> {
    match level {
        FindLevel::Study => vec![
            tags::STUDY_INSTANCE_UID,
            tags::STUDY_DATE,
            tags::MODALITIES_IN_STUDY,
            tags::STUDY_DESCRIPTION,
            tags::NUMBER_OF_STUDY_RELATED_SERIES,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        ],
        FindLevel::Series => vec![
            tags::STUDY_INSTANCE_UID,
            tags::SERIES_INSTANCE_UID,
            tags::MODALITY,
            tags::SERIES_DESCRIPTION,
            tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
            tags::STUDY_DATE,
        ],
    }
}

pub fn find(args: &FindArgs) -> anyhow::Result<()> {
    let (level, modality_tag) = match args.level {
        FindLevel::Study => (Level::Study, tags::MODALITIES_IN_STUDY),
        FindLevel::Series => (Level::Series, tags::MODALITY),
    };
    let mut keys = Vec::new();
    for (tag, value) in [
        (tags::PATIENT_ID, &args.patient_id),
        (tags::STUDY_INSTANCE_UID, &args.study_uid),
        (modality_tag, &args.modality),
    ] {
        if let Some(value) = value {
            keys.push((tag, value.clone()));
        }
    }
    let mut shown = Vec::new();
    if args.show_patient {
        shown.extend(PATIENT_TAGS);
    }
    shown.extend(columns(args.level));
    eprintln!("Pinhole DICOM query (NOT FOR CLINICAL USE)");
    let matches = match &args.from {
        Node::Dimse(from) => {
            args.web.check_unused(&args.from)?;
            let mut config = query_config(from, &args.calling_ae, args.timeout_s)?;
            config.max_matches = args.max_matches;
            pinhole_dicomnet::find(&config, level, &keys, &shown)
                .map_err(|e| with_hint(e, &args.calling_ae))?
        }
        Node::Web(url) => {
            let mut config = args.web.config(url, args.timeout_s)?;
            config.max_matches = args.max_matches;
            super::dicom_web::find(&config, level, &keys, &shown)?
        }
    };
    // A patient attribute used as a matching key comes back too: shown only when asked.
    let visible = |tag: &Tag| args.show_patient || !PATIENT_TAGS.contains(tag);
    if args.json {
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = matches
            .iter()
            .map(|m| {
                m.values()
                    .iter()
                    .filter(|(tag, _)| visible(tag))
                    .map(|(tag, value)| (keyword(*tag), serde_json::Value::from(value.as_str())))
                    .collect()
            })
            .collect();
        let out = serde_json::json!({
            "peer": args.from.to_string(),
            "level": level,
            "matches": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&shown, &matches));
    }
    eprintln!("{} {level} match(es) from {}", matches.len(), args.from);
    Ok(())
}

/// A text table: a header of keywords, one row per match, columns padded to their
/// widest cell ("-" for a value not returned); control characters replaced.
fn table(shown: &[Tag], matches: &[Match]) -> String {
    let mut rows: Vec<Vec<String>> = vec![shown.iter().map(|t| keyword(*t)).collect()];
    for m in matches {
        rows.push(
            shown
                .iter()
                .map(|t| m.get(*t).map_or_else(|| "-".to_string(), printable))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..shown.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A value from the network, safe to print on a terminal.
fn printable(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

pub fn pull(args: &PullArgs) -> anyhow::Result<()> {
    pinhole_dicomnet::store::check_uid("--series-uid", &args.series_uid)
        .map_err(anyhow::Error::msg)?;
    let from = match &args.from {
        Node::Web(url) => return pull_web(args, url),
        Node::Dimse(from) => from,
    };
    args.web.check_unused(&args.from)?;
    let config = query_config(from, &args.ae_title, args.timeout_s)?;
    eprintln!("Pinhole DICOM pull (NOT FOR CLINICAL USE)");
    if args.get {
        return pull_get(args, &config);
    }
    let study_uid = match &args.study_uid {
        Some(uid) => {
            pinhole_dicomnet::store::check_uid("--study-uid", uid).map_err(anyhow::Error::msg)?;
            uid.clone()
        }
        None => study_of(&config, &args.series_uid)?,
    };

    // The listener first: the PACS connects to it while the C-MOVE is in progress.
    let allowed = if args.allow.is_empty() {
        let addrs: Vec<IpAddr> = (from.host.trim_matches(['[', ']']), from.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", from.host))?
            .map(|a| a.ip())
            .collect();
        if addrs.is_empty() {
            bail!("{} resolves to no address", from.host);
        }
        addrs
    } else {
        args.allow.clone()
    };
    let mut listener_config = ListenerConfig::new(
        args.ae_title.clone(),
        SocketAddr::new(args.bind, args.port),
        args.store.clone(),
    );
    listener_config.allowed_peers = Some(allowed.clone());
    listener_config.series_quiet = Duration::from_secs(1);
    let listener = Listener::bind(listener_config)?;
    eprintln!(
        "  receiving as {} on {} into {} (from {})",
        args.ae_title,
        listener.local_addr(),
        args.store.display(),
        allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "  C-MOVE of series {} (study {study_uid}) from {}",
        args.series_uid, args.from
    );
    // Hidden when stderr is not a terminal.
    let bar = super::dicom_web::instances_spinner();
    let (sender, events) = mpsc::channel();
    let progress = bar.clone();
    let handle = listener.spawn(move |event: Event| {
        match &event {
            Event::InstanceStored { .. } => progress.inc(1),
            Event::Warning { message } => {
                progress.suspend(|| eprintln!("warning: {message}"));
            }
            Event::AssociationRejected { peer, reason } => {
                progress
                    .suspend(|| eprintln!("warning: association from {peer} rejected: {reason}"));
            }
            _ => {}
        }
        let _ = sender.send(event);
    })?;

    let outcome =
        pinhole_dicomnet::move_series(&config, &args.ae_title, &study_uid, &args.series_uid);
    let (report, failure) = match report_and_failure(outcome) {
        Ok(pair) => pair,
        Err(e) => {
            bar.finish_and_clear();
            handle.shutdown();
            return Err(with_hint(e, &args.ae_title));
        }
    };

    // Every sub-operation answered has its file in place (the listener answers after
    // the rename); the series is complete once the listener has seen it quiet.
    let expected = usize::from(report.completed) + usize::from(report.warning);
    let mut complete = None;
    if expected > 0 {
        let deadline = Instant::now() + config.timeout;
        while complete.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(Event::SeriesComplete {
                    series_uid,
                    instances,
                    folder,
                    ..
                }) if series_uid == args.series_uid && instances >= expected => {
                    complete = Some((folder, instances));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    bar.finish_and_clear();
    handle.shutdown();

    summarise(&report, complete.as_ref(), args.json)?;
    if let Some(failure) = failure {
        bail!(failure);
    }
    if report.failed > 0 {
        bail!(
            "{} sub-operation(s) failed{}",
            report.failed,
            failed_list(&report)
        );
    }
    if expected == 0 {
        bail!(
            "{} moved no instance of series {} (is it on that PACS?)",
            args.from,
            args.series_uid
        );
    }
    if complete.is_none() {
        bail!(
            "the PACS reports {expected} instance(s) sent, but series {} did not complete in {} within {:.0} s",
            args.series_uid,
            args.store.display(),
            config.timeout.as_secs_f64()
        );
    }
    Ok(())
}

/// `pull --get`: C-GET, the instances written as they come on the association.
fn pull_get(args: &PullArgs, config: &QueryConfig) -> anyhow::Result<()> {
    let study_uid = match &args.study_uid {
        Some(uid) => {
            pinhole_dicomnet::store::check_uid("--study-uid", uid).map_err(anyhow::Error::msg)?;
            uid.clone()
        }
        None => study_of(config, &args.series_uid)?,
    };
    eprintln!(
        "  C-GET of series {} (study {study_uid}) from {} into {}",
        args.series_uid,
        args.from,
        args.store.display()
    );
    let bar = super::dicom_web::instances_spinner();
    let mut folder = None;
    let outcome = pinhole_dicomnet::get_series(
        config,
        &study_uid,
        &args.series_uid,
        &args.store,
        pinhole_dicomnet::config::DEFAULT_MAX_INSTANCE_BYTES as usize,
        &mut |stored| {
            folder = Some(stored.folder.clone());
            bar.inc(1);
        },
    );
    bar.finish_and_clear();
    let (report, failure) =
        report_and_failure(outcome).map_err(|e| with_hint(e, &args.ae_title))?;
    for refused in &report.refused {
        eprintln!("warning: refused here: {refused}");
    }
    let complete = folder.map(|f| (f, report.stored));
    summarise(&report, complete.as_ref(), args.json)?;
    if let Some(failure) = failure {
        bail!(failure);
    }
    if report.failed > 0 || !report.refused.is_empty() {
        bail!(
            "{} sub-operation(s) failed, {} refused here{}",
            report.failed,
            report.refused.len(),
            failed_list(&report)
        );
    }
    if report.stored == 0 {
        bail!(
            "{} sent no instance of series {} (is it on that PACS?)",
            args.from,
            args.series_uid
        );
    }
    Ok(())
}

/// `pull` from a DICOMweb root: WADO-RS, no listener.
fn pull_web(args: &PullArgs, url: &str) -> anyhow::Result<()> {
    let config = args.web.config(url, args.timeout_s)?;
    eprintln!("Pinhole DICOM pull (NOT FOR CLINICAL USE)");
    let study_uid = match &args.study_uid {
        Some(uid) => {
            pinhole_dicomnet::store::check_uid("--study-uid", uid).map_err(anyhow::Error::msg)?;
            uid.clone()
        }
        None => super::dicom_web::study_of(&config, &args.series_uid)?,
    };
    super::dicom_web::pull(
        &config,
        &study_uid,
        &args.series_uid,
        &args.store,
        args.json,
    )
}

/// The study of `series_uid`, by a C-FIND at the series level.
fn study_of(config: &QueryConfig, series_uid: &str) -> anyhow::Result<String> {
    let matches = pinhole_dicomnet::find(
        config,
        Level::Series,
        &[(tags::SERIES_INSTANCE_UID, series_uid.to_string())],
        &[tags::STUDY_INSTANCE_UID],
    )
    .map_err(|e| with_hint(e, &config.calling_ae))?;
    let node = format!("{}@{}", config.called_ae, config.addr);
    the_one_study(&matches, series_uid, &node, "C-FIND")
}

/// The one study the series-level `matches` name for `series_uid`; an error naming
/// `node` and the `query` when there is none or several.
pub(super) fn the_one_study(
    matches: &[Match],
    series_uid: &str,
    node: &str,
    query: &str,
) -> anyhow::Result<String> {
    let studies: Vec<&str> = matches
        .iter()
        .filter_map(|m| m.get(tags::STUDY_INSTANCE_UID))
        .collect();
    match studies.as_slice() {
        [study] => Ok((*study).to_string()),
        [] => bail!("{node} has no series {series_uid} ({query} found none)"),
        _ => bail!(
            "series {series_uid} is found in {} studies: give --study-uid",
            studies.len()
        ),
    }
}

/// A C-MOVE / C-GET outcome as (report, why it failed): a final failure status keeps
/// its report (the counts so far); any other error stays an error.
fn report_and_failure(
    outcome: Result<MoveReport, QueryError>,
) -> Result<(MoveReport, Option<String>), QueryError> {
    match outcome {
        Ok(report) => Ok((report, None)),
        Err(QueryError::Status {
            report: Some(report),
            operation,
            status,
            status_text,
            comment,
            ..
        }) => {
            let comment = comment.map(|c| format!(": {c}")).unwrap_or_default();
            Ok((
                *report,
                Some(format!(
                    "{operation} answered with status 0x{status:04X} ({status_text}){comment}"
                )),
            ))
        }
        Err(e) => Err(e),
    }
}

/// The error, with a hint when the PACS aborted the association: most do that to a
/// calling AE title they do not know.
fn with_hint(error: QueryError, calling_ae: &str) -> anyhow::Error {
    match &error {
        QueryError::Protocol { reason, .. } if reason.contains("aborted") => {
            anyhow::anyhow!(
                "{error} (a PACS usually aborts queries from AE titles it does not know: is {calling_ae} configured on it?)"
            )
        }
        _ => error.into(),
    }
}

fn failed_list(report: &MoveReport) -> String {
    if report.failed_sop_instances.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = report
        .failed_sop_instances
        .iter()
        .take(10)
        .map(String::as_str)
        .collect();
    format!(
        ": {}{}",
        shown.join(", "),
        if report.failed_sop_instances.len() > 10 {
            ", ..."
        } else {
            ""
        }
    )
}

/// The summary lines: on stdout, or on stderr when stdout carries JSON.
fn summarise(
    report: &MoveReport,
    complete: Option<&(PathBuf, usize)>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let out = serde_json::json!({
            "report": report,
            "folder": complete.map(|(f, _)| f.display().to_string()),
            "instances_in_folder": complete.map(|(_, n)| *n),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    let mut lines = vec![report.summary()];
    if let Some((folder, instances)) = complete {
        lines.push(format!(
            "series folder: {} ({instances} instance(s))",
            folder.display()
        ));
    }
    for line in lines {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(())
}
