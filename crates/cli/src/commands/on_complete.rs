//! `pinhole dicom listen --on-complete 'COMMAND ARGS…'`: a command run for each complete
//! series the listener receives — typically `pinhole plan needle --ct {folder} …`, so that
//! a plan starts as soon as the scanner or PACS has sent the CT.
//!
//! * The template is split like a POSIX shell would split it (quotes, backslashes; no
//!   variables, globs, pipes or redirections: no shell runs) and then each word has its
//!   placeholders replaced: `{folder}` (the series' folder in the store), `{series}`
//!   (SeriesInstanceUID), `{study}` (StudyInstanceUID), `{instances}`, `{modality}`.
//!   UIDs are checked by the receiver before they become folder names, so what lands in
//!   a word is digits and dots or a path under `--store`.
//! * Only series whose Modality is in `--on-complete-modality` (default CT; `any` for
//!   all) run it. One worker thread runs the commands one at a time, in the order the
//!   series completed; the listener never waits for them.
//! * The command's stdout and stderr go to `<store>/<study>/<series>.on-complete.log`;
//!   the terminal gets one line per run (exit status, seconds, the log) and a warning
//!   when it fails or cannot start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::time::Instant;

use anyhow::{bail, Context};

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 5] = [
    "{folder}",
    "{series}",
    "{study}",
    "{instances}",
    "{modality}",
];

/// A checked `--on-complete` template.
#[derive(Debug, Clone)]
pub struct Template {
    words: Vec<String>,
}

impl std::str::FromStr for Template {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words = shlex::split(s).ok_or_else(|| {
            format!("{s:?}: unbalanced quotes or a trailing backslash in the command")
        })?;
        if words.is_empty() {
            return Err("an empty command".into());
        }
        for word in &words {
            let mut rest = word.as_str();
            while let Some(start) = rest.find('{') {
                let tail = &rest[start..];
                let Some(known) = PLACEHOLDERS.iter().find(|p| tail.starts_with(**p)) else {
                    return Err(format!(
                        "{word:?}: unknown placeholder; use {}",
                        PLACEHOLDERS.join(", ")
                    ));
                };
                rest = &tail[known.len()..];
            }
        }
        Ok(Self { words })
    }
}

/// One complete series, as the command sees it.
#[derive(Debug, Clone)]
pub struct CompleteSeries {
    pub study_uid: String,
    pub series_uid: String,
    pub instances: usize,
    pub folder: PathBuf,
}

impl Template {
    /// The program and its arguments for `series` of `modality`.
    fn argv(&self, series: &CompleteSeries, modality: &str) -> Vec<String> {
        let folder = series.folder.to_string_lossy();
        let instances = series.instances.to_string();
        self.words
            .iter()
            .map(|w| {
                w.replace("{folder}", &folder)
                    .replace("{series}", &series.series_uid)
                    .replace("{study}", &series.study_uid)
                    .replace("{instances}", &instances)
                    .replace("{modality}", modality)
            })
            .collect()
    }
}

/// The worker that runs the command for complete series; `run` never blocks.
pub struct OnComplete {
    queue: Sender<CompleteSeries>,
}

impl OnComplete {
    /// Starts the worker; `modalities` (upper case) filters the series (`ANY`: all);
    /// `report(line, is_warning)` gets one line per series.
    pub fn start(
        template: Template,
        modalities: Vec<String>,
        report: impl Fn(String, bool) + Send + 'static,
    ) -> Self {
        let (queue, incoming) = mpsc::channel::<CompleteSeries>();
        std::thread::spawn(move || {
            while let Ok(series) = incoming.recv() {
                match run_one(&template, &modalities, &series) {
                    Ok(Some(line)) => report(line, false),
                    Ok(None) => {}
                    Err(e) => report(
                        format!("on-complete: series {}: {e:#}", series.series_uid),
                        true,
                    ),
                }
            }
        });
        Self { queue }
    }

    /// Queues a complete series.
    pub fn run(&self, series: CompleteSeries) {
        let _ = self.queue.send(series);
    }
}

/// The series' modality as its files say (the listing of its folder).
fn modality_of(series: &CompleteSeries) -> anyhow::Result<String> {
    let listed = pinhole_io::dicom::list_series(&series.folder)
        .map_err(|e| anyhow::anyhow!(pinhole_io::error::error_chain(&e)))?;
    Ok(listed
        .iter()
        .find(|s| s.series_uid == series.series_uid)
        .or(listed.first())
        .map(|s| s.modality.trim().to_ascii_uppercase())
        .unwrap_or_default())
}

/// Where a series' command log goes: beside its folder.
fn log_path(folder: &Path) -> PathBuf {
    let mut name = folder
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".on-complete.log");
    folder.with_file_name(name)
}

/// Runs the command for one series; `None` when its modality is filtered out.
fn run_one(
    template: &Template,
    modalities: &[String],
    series: &CompleteSeries,
) -> anyhow::Result<Option<String>> {
    let modality = modality_of(series)?;
    if !modalities.iter().any(|m| m == "ANY" || *m == modality) {
        return Ok(None);
    }
    let argv = template.argv(series, &modality);
    let log = log_path(&series.folder);
    let file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let errors = file
        .try_clone()
        .with_context(|| format!("cannot share {}", log.display()))?;
    let started = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(errors)
        .status()
        .with_context(|| format!("cannot start {:?}", argv[0]))?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "`{}` failed ({status}) after {seconds:.1} s; its output: {}",
            argv.join(" "),
            log.display()
        );
    }
    Ok(Some(format!(
        "on-complete: series {} ({modality}): `{}` done in {seconds:.1} s; its output: {}",
        series.series_uid,
        argv.join(" "),
        log.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_like_a_shell_and_fill_their_placeholders() {
        let t: Template = "pinhole plan needle --ct {folder} --out '{folder} plan' --note \"a b\""
            .parse()
            .unwrap();
        let series = CompleteSeries {
            study_uid: "1.2".into(),
            series_uid: "1.2.3".into(),
            instances: 20,
            folder: PathBuf::from("/store/1.2/1.2.3"),
        };
        assert_eq!(
            t.argv(&series, "CT"),
            [
                "pinhole",
                "plan",
                "needle",
                "--ct",
                "/store/1.2/1.2.3",
                "--out",
                "/store/1.2/1.2.3 plan",
                "--note",
                "a b"
            ]
        );
        let t: Template = "echo {study}/{series}:{instances}:{modality}"
            .parse()
            .unwrap();
        assert_eq!(t.argv(&series, "CT"), ["echo", "1.2/1.2.3:20:CT"]);
        assert_eq!(
            log_path(&series.folder),
            PathBuf::from("/store/1.2/1.2.3.on-complete.log")
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("echo 'unclosed", "unbalanced"),
            ("echo {patient}", "unknown placeholder"),
        ] {
            let e = bad.parse::<Template>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
