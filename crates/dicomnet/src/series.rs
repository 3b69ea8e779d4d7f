//! Series completion: a series is complete when none of its instances arrived for
//! `series_quiet` and no association that sent one of them is in the middle of
//! receiving a data set (whose series is not known until it is complete).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::listener::Shared;
use crate::sop::VOLUME_SOP_CLASSES;

struct Pending {
    last: Instant,
    folder: PathBuf,
    contributors: HashSet<u64>,
    /// Every instance so far is of a class the series reader reads as a volume.
    volume: bool,
}

/// The series waiting for quiet, and the associations receiving a data set now.
#[derive(Default)]
pub(crate) struct SeriesTable {
    pending: HashMap<(String, String), Pending>,
    busy: HashSet<u64>,
}

/// A series found complete.
pub(crate) struct Complete {
    pub study_uid: String,
    pub series_uid: String,
    pub folder: PathBuf,
    pub volume: bool,
}

impl SeriesTable {
    /// Records an instance stored by `association` at `now`.
    pub fn instance_stored(
        &mut self,
        stored: &crate::store::Stored,
        association: u64,
        now: Instant,
    ) {
        let volume = VOLUME_SOP_CLASSES.contains(&stored.sop_class_uid.as_str());
        let entry = self
            .pending
            .entry((stored.study_uid.clone(), stored.series_uid.clone()))
            .or_insert_with(|| Pending {
                last: now,
                folder: stored.folder.clone(),
                contributors: HashSet::new(),
                volume,
            });
        entry.last = now;
        entry.volume &= volume;
        entry.contributors.insert(association);
    }

    /// Marks `association` as receiving a data set (or not).
    pub fn set_busy(&mut self, association: u64, busy: bool) {
        if busy {
            self.busy.insert(association);
        } else {
            self.busy.remove(&association);
        }
    }

    /// Removes and returns the series complete at `now`.
    pub fn take_complete(&mut self, now: Instant, quiet: Duration) -> Vec<Complete> {
        let done: Vec<(String, String)> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                now.saturating_duration_since(p.last) >= quiet
                    && p.contributors.is_disjoint(&self.busy)
            })
            .map(|(key, _)| key.clone())
            .collect();
        done.into_iter()
            .filter_map(|key| {
                let p = self.pending.remove(&key)?;
                Some(Complete {
                    study_uid: key.0,
                    series_uid: key.1,
                    folder: p.folder,
                    volume: p.volume,
                })
            })
            .collect()
    }
}

/// Reports completed series until the listener stops. Runs on its own thread.
pub(crate) fn watch(shared: &Shared, events: Sender<Event>) {
    let quiet = shared.config.series_quiet;
    let tick = (quiet / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut table = shared.lock_series();
    loop {
        if shared.stopping() {
            return;
        }
        let complete = table.take_complete(Instant::now(), quiet);
        if complete.is_empty() {
            table = match shared.wake.wait_timeout(table, tick) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            continue;
        }
        drop(table);
        for series in complete {
            report(series, &events);
        }
        table = shared.lock_series();
    }
}

fn report(series: Complete, events: &Sender<Event>) {
    let instances = count_instances(&series.folder);
    let check = series
        .volume
        .then(|| pinhole_io::dicom::list_series(&series.folder));
    let _ = events.send(Event::SeriesComplete {
        study_uid: series.study_uid.clone(),
        series_uid: series.series_uid.clone(),
        instances,
        folder: series.folder.clone(),
    });
    let problem = match check {
        Some(Err(e)) => Some(e.to_string()),
        Some(Ok(found)) if found.len() != 1 => {
            Some(format!("{} series in one folder", found.len()))
        }
        _ => None,
    };
    if let Some(problem) = problem {
        let _ = events.send(Event::Warning {
            message: format!(
                "series {} is complete but the series reader cannot list it: {problem}",
                series.series_uid
            ),
        });
    }
}

/// `.dcm` files (not hidden) directly in `folder`.
fn count_instances(folder: &Path) -> usize {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    !name.starts_with('.')
                        && name.ends_with(".dcm")
                        && e.file_type().is_ok_and(|t| t.is_file())
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Stored;

    fn stored(series: &str) -> Stored {
        Stored {
            study_uid: "1.2".into(),
            series_uid: series.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: "1.2.3".into(),
            folder: PathBuf::from("/x"),
            path: PathBuf::from("/x/1.2.3.dcm"),
            bytes: 1,
        }
    }

    #[test]
    fn complete_after_quiet_unless_a_contributor_is_receiving() {
        let quiet = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut table = SeriesTable::default();
        table.instance_stored(&stored("1.3"), 1, t0);
        table.instance_stored(&stored("1.4"), 2, t0);
        assert!(table
            .take_complete(t0 + Duration::from_secs(4), quiet)
            .is_empty());
        table.set_busy(2, true);
        let done = table.take_complete(t0 + Duration::from_secs(6), quiet);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].series_uid, "1.3");
        assert!(done[0].volume);
        table.set_busy(2, false);
        let done = table.take_complete(t0 + Duration::from_secs(6), quiet);
        assert_eq!(done.len(), 1);
        assert!(table
            .take_complete(t0 + Duration::from_secs(60), quiet)
            .is_empty());
    }
}
