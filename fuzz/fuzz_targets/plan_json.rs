//! Any file given as a needle plan (`plan.json`: Pinhole's or hand-written) is read by
//! `pinhole_pipeline::needle::PlanPaths::read` (what `serve`, `drr`, `register`,
//! `plan ablation` and `tracks` read of a plan) and by the typed
//! `NeedleReport::read`, giving a plan or an error naming the file, never a panic.
//! serde_json's recursion limit (128) bounds nesting; inputs up to 1 MiB reach it.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pinhole_pipeline::needle::{NeedleReport, PlanPaths};
use pinhole_pipeline::Report;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("pinhole-fuzz-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz folder");
        dir.join("plan.json")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    std::fs::write(path, data).expect("write the plan");
    match PlanPaths::read(path) {
        Ok(plan) => {
            let needle = plan.planned_needle();
            let _ = needle.target_lps;
            for p in &plan.paths {
                let _ = p.length_mm();
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("plan.json"),
                "error without the file: {message}"
            );
        }
    }
    let _ = NeedleReport::read(path);
});
