//! Any file given as a needle plan (`plan.json`: Pinhole's or hand-written) is read by
//! `pinhole_pipeline::needle::PlanPaths::read` (what `serve`, `drr`, `register`,
//! `plan ablation` and `tracks` read of a plan) and by the typed
//! `NeedleReport::read`, giving a plan or an error naming the file, never a panic.
//! serde_json's recursion limit (128) bounds nesting; inputs up to 1 MiB reach it.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;
use pinhole_pipeline::needle::{NeedleReport, PlanPaths};
use pinhole_pipeline::Report;

fuzz_target!(|data: &[u8]| {
    let path = &scratch::folder("plan").join("plan.json");
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
