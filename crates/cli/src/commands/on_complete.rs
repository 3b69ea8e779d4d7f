//! `pinhole dicom listen --on-complete 'COMMAND ARGS…'`: a command run for each complete
//! series the listener receives — typically `pinhole plan needle --ct {folder} …`, so that
//! a plan starts as soon as the scanner or PACS has sent the CT.
//!
//! * The template is split like a POSIX shell would split it (quotes, backslashes; no
//!   variables, globs, pipes or redirections: no shell runs) and then each word has its
//!   placeholders replaced: `{folder}` (the series' folder in the store), `{series}`
//!   (SeriesInstanceUID), `{study}` (StudyInstanceUID), `{instances}`, `{modality}`,
//!   `{seg}` (a DICOM Segmentation received in the same study that references this
//!   series). UIDs are checked by the receiver before they become folder names, so what
//!   lands in a word is digits and dots or a path under `--store`.
//! * With `{seg}` the command waits for its Segmentation: a series complete before any
//!   Segmentation referencing it arrived is kept (one line says so) and run as soon as
//!   a Segmentation series of its study that references it is complete, whichever
//!   arrives first. Of several, the most recently received is used (its path is in the
//!   command shown on the terminal).
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
const PLACEHOLDERS: [&str; 6] = [
    "{folder}",
    "{series}",
    "{study}",
    "{instances}",
    "{modality}",
    "{seg}",
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
    /// The program and its arguments for `series` of `modality`, with `seg` for `{seg}`.
    fn argv(&self, series: &CompleteSeries, modality: &str, seg: Option<&Path>) -> Vec<String> {
        let folder = series.folder.to_string_lossy();
        let instances = series.instances.to_string();
        let seg = seg.map(|p| p.to_string_lossy()).unwrap_or_default();
        self.words
            .iter()
            .map(|w| {
                w.replace("{folder}", &folder)
                    .replace("{series}", &series.series_uid)
                    .replace("{study}", &series.study_uid)
                    .replace("{instances}", &instances)
                    .replace("{modality}", modality)
                    .replace("{seg}", &seg)
            })
            .collect()
    }

    /// True when the command needs a Segmentation of the series.
    fn uses_seg(&self) -> bool {
        self.words.iter().any(|w| w.contains("{seg}"))
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
            // Series waiting for a Segmentation that references them (`{seg}`).
            let mut waiting: Vec<(CompleteSeries, String)> = Vec::new();
            let outcome =
                |series: &CompleteSeries, result: anyhow::Result<Option<String>>| match result {
                    Ok(Some(line)) => report(line, false),
                    Ok(None) => {}
                    Err(e) => report(
                        format!("on-complete: series {}: {e:#}", series.series_uid),
                        true,
                    ),
                };
            while let Ok(series) = incoming.recv() {
                let modality = match modality_of(&series) {
                    Ok(modality) => modality,
                    Err(e) => {
                        outcome(&series, Err(e));
                        continue;
                    }
                };
                if template.uses_seg() && modality == "SEG" {
                    // A Segmentation arrived: run what waited for it.
                    let mut still = Vec::new();
                    for (held, held_modality) in waiting.drain(..) {
                        match find_segmentation(&held) {
                            Some(seg) => outcome(
                                &held,
                                run_one(&template, &held, &held_modality, Some(&seg)).map(Some),
                            ),
                            None => still.push((held, held_modality)),
                        }
                    }
                    waiting = still;
                }
                if !modalities.iter().any(|m| m == "ANY" || *m == modality) {
                    continue;
                }
                if !template.uses_seg() {
                    outcome(
                        &series,
                        run_one(&template, &series, &modality, None).map(Some),
                    );
                    continue;
                }
                match find_segmentation(&series) {
                    Some(seg) => outcome(
                        &series,
                        run_one(&template, &series, &modality, Some(&seg)).map(Some),
                    ),
                    None => {
                        report(
                            format!(
                                "on-complete: series {} ({modality}) waits for a DICOM \
                                 Segmentation referencing it ({{seg}})",
                                series.series_uid
                            ),
                            false,
                        );
                        waiting.push((series, modality));
                    }
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

/// The DICOM files of a folder, in name order.
fn files_in(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The newest Segmentation in the series' study (its sibling folders) that references
/// the series.
fn find_segmentation(series: &CompleteSeries) -> Option<PathBuf> {
    let study = series.folder.parent()?;
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(study).ok()?.filter_map(Result::ok) {
        let folder = entry.path();
        if folder == series.folder || !folder.is_dir() {
            continue;
        }
        for file in files_in(&folder) {
            if !pinhole_io::dicom::seg_input::is_segmentation_file(&file) {
                continue;
            }
            let references = pinhole_io::dicom::seg_input::referenced_series(&file)
                .is_ok_and(|uids| uids.contains(&series.series_uid));
            if references {
                let modified = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((modified, file));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, file)| file)
}

/// The series' modality as its files say (the listing of its folder; `SEG` for a
/// folder of Segmentations).
fn modality_of(series: &CompleteSeries) -> anyhow::Result<String> {
    let files = files_in(&series.folder);
    if !files.is_empty()
        && files
            .iter()
            .all(|f| pinhole_io::dicom::seg_input::is_segmentation_file(f))
    {
        return Ok("SEG".into());
    }
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

/// Runs the command for one series (`seg`: the Segmentation for `{seg}`).
fn run_one(
    template: &Template,
    series: &CompleteSeries,
    modality: &str,
    seg: Option<&Path>,
) -> anyhow::Result<String> {
    let argv = template.argv(series, modality, seg);
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
    Ok(format!(
        "on-complete: series {} ({modality}): `{}` done in {seconds:.1} s; its output: {}",
        series.series_uid,
        argv.join(" "),
        log.display()
    ))
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
            t.argv(&series, "CT", None),
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
        assert_eq!(t.argv(&series, "CT", None), ["echo", "1.2/1.2.3:20:CT"]);
        assert!(!t.uses_seg());
        let t: Template = "plan --labels {seg}".parse().unwrap();
        assert!(t.uses_seg());
        let seg = PathBuf::from("/store/1.2/9.9/s.dcm");
        assert_eq!(
            t.argv(&series, "CT", Some(&seg)),
            ["plan", "--labels", "/store/1.2/9.9/s.dcm"]
        );
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
