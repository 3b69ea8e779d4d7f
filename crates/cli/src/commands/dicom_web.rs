//! The DICOMweb side of `pinhole dicom find | pull | push`: a `--from` / `--to` given as
//! an `http(s)://` service root runs QIDO-RS, WADO-RS or STOW-RS
//! (`pinhole_dicomnet::web`) instead of C-FIND, C-MOVE or C-STORE. Not for clinical use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pinhole_dicomnet::query::tags;
use pinhole_dicomnet::web::{self, WebConfig};
use pinhole_dicomnet::{Destination, Level, Match, Outcome};

/// A DICOM node: a DIMSE peer (`AE@HOST:PORT`) or a DICOMweb service root.
#[derive(Clone, Debug)]
pub enum Node {
    Dimse(Destination),
    Web(String),
}

impl std::str::FromStr for Node {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let config = WebConfig::new(text);
            config.validate().map_err(|e| e.to_string())?;
            Ok(Node::Web(config.base_url))
        } else {
            text.parse().map(Node::Dimse)
        }
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Dimse(d) => d.fmt(f),
            Node::Web(url) => f.write_str(url),
        }
    }
}

/// Options that apply to a DICOMweb node only.
#[derive(Args, Clone, Default)]
pub struct WebOptions {
    /// DICOMweb only: the environment variable holding the Authorization header's value
    /// ("Basic …" or "Bearer …"); kept out of the command line and never printed.
    #[arg(long, value_name = "VARIABLE")]
    auth_env: Option<String>,
    /// DICOMweb only: trust the certificate authorities in this PEM file for https://
    /// (a site's own PKI) instead of the Mozilla root certificates.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
}

impl WebOptions {
    /// Refuses the options where the node is a DIMSE peer.
    pub fn check_unused(&self, node: &Node) -> anyhow::Result<()> {
        if self.auth_env.is_some() || self.ca_cert.is_some() {
            bail!(
                "--auth-env and --ca-cert apply to a DICOMweb node (http:// or https://), not \
                 {node}"
            );
        }
        Ok(())
    }

    pub fn config(&self, url: &str, timeout_s: f64) -> anyhow::Result<WebConfig> {
        let mut config = WebConfig::new(url);
        config.timeout = Duration::try_from_secs_f64(timeout_s)
            .with_context(|| format!("--timeout-s {timeout_s}"))?;
        if let Some(variable) = &self.auth_env {
            let value = std::env::var(variable)
                .with_context(|| format!("--auth-env {variable}: the variable is not set"))?;
            if value.trim().is_empty() {
                bail!("--auth-env {variable}: the variable is empty");
            }
            config.authorization = Some(value);
        }
        if let Some(pem) = &self.ca_cert {
            config.trusted_certificates_pem =
                Some(std::fs::read(pem).with_context(|| format!("--ca-cert {}", pem.display()))?);
        }
        config.validate()?;
        Ok(config)
    }
}

/// A spinner counting instances received (hidden when stderr is not a terminal).
pub fn instances_spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} instance(s) received ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A bar over `files` files sent, labelled `what` (hidden when stderr is not a terminal).
pub fn files_bar(files: usize, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(files as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

/// QIDO-RS search; `shown` are the return keys, `keys` the matching keys.
pub fn find(
    config: &WebConfig,
    level: Level,
    keys: &[(pinhole_dicomnet::query::Tag, String)],
    shown: &[pinhole_dicomnet::query::Tag],
) -> anyhow::Result<Vec<Match>> {
    Ok(web::search(config, level, keys, shown)?)
}

/// The study of `series_uid`, by a QIDO-RS search at the series level.
pub fn study_of(config: &WebConfig, series_uid: &str) -> anyhow::Result<String> {
    let matches = web::search(
        config,
        Level::Series,
        &[(tags::SERIES_INSTANCE_UID, series_uid.to_string())],
        &[tags::STUDY_INSTANCE_UID],
    )?;
    super::dicom_query::the_one_study(&matches, series_uid, &config.base_url, "QIDO-RS")
}

/// WADO-RS retrieval of one series into `store`.
pub fn pull(
    config: &WebConfig,
    study_uid: &str,
    series_uid: &str,
    store: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    eprintln!(
        "  WADO-RS of series {series_uid} (study {study_uid}) from {}",
        config.base_url
    );
    let bar = instances_spinner();
    let mut folder = None;
    let report = web::retrieve_series(config, study_uid, series_uid, store, &mut |stored| {
        folder = Some(stored.folder.clone());
        bar.inc(1);
    });
    bar.finish_and_clear();
    let report = report?;
    for refused in &report.refused {
        eprintln!("warning: {refused}");
    }
    if json {
        let out = serde_json::json!({
            "report": &report,
            "folder": folder.as_ref().map(|f| f.display().to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        eprintln!("{}", report.summary());
    } else {
        println!("{}", report.summary());
        if let Some(folder) = &folder {
            println!("  series folder: {}", folder.display());
        }
    }
    if report.stored == 0 {
        bail!(
            "{} sent no instance of series {series_uid}",
            config.base_url
        );
    }
    if !report.refused.is_empty() {
        bail!("{} part(s) refused", report.refused.len());
    }
    Ok(())
}

/// STOW-RS of `files`; `describe` prints one line per file not plainly stored.
pub fn push(
    config: &WebConfig,
    files: &[PathBuf],
    deidentify: Option<&pinhole_io::dicom::deidentify::DeidentifyKey>,
    json: bool,
    describe: &dyn Fn(&pinhole_dicomnet::FileReport) -> String,
) -> anyhow::Result<()> {
    let bar = files_bar(files.len(), "storing");
    let result = web::store_files(config, files, deidentify, &mut |file| {
        if file.outcome != Outcome::Success {
            bar.suspend(|| eprintln!("{}", describe(file)));
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let mut report = result?;
    for file in &mut report.files {
        file.name = pinhole_pipeline::provenance::recorded_path(&file.path);
    }
    print_push_report(
        || serde_json::to_string_pretty(&report),
        &report.summary(),
        json,
    )?;
    all_stored(report.stored(), report.total)
}

/// A push's report: the JSON on stdout and the summary on stderr, or the summary alone
/// on stdout (C-STORE and STOW-RS alike).
pub fn print_push_report(
    pretty_json: impl FnOnce() -> serde_json::Result<String>,
    summary: &str,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", pretty_json()?);
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// An error unless all `total` files were stored.
pub fn all_stored(stored: usize, total: usize) -> anyhow::Result<()> {
    if stored != total {
        bail!("{} of {total} file(s) not stored", total - stored);
    }
    Ok(())
}
