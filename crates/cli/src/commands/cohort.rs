//! `pinhole cohort run|drr ...`: cohorts on Ray, which lives in the Python package
//! (`pinhole.cohort`); this command hands its arguments to `python3 -m pinhole cohort`
//! so that one implementation serves the CLI and Python (ARCHITECTURE.md, "Why Ray").

use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use clap::Args;

#[derive(Args)]
pub struct CohortArgs {
    /// `run MANIFEST --procedure P --out DIR [--ray-address A] ...` or
    /// `drr --ct CT --out DIR --n N ...`; `pinhole cohort run --help` for the options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    args: Vec<String>,
}

/// The interpreter with the `pinhole` package: `PINHOLE_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

pub fn run(args: &CohortArgs) -> anyhow::Result<ExitCode> {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import pinhole.cohort, ray, pyarrow"])
        .output()
        .with_context(|| {
            format!("starting {python} (set PINHOLE_PYTHON to another interpreter)")
        })?;
    if !probe.status.success() {
        bail!(
            "pinhole cohort needs the Python package `pinhole` with Ray in {python}: \
             pip install 'pinhole[cohort]' from the wheel (README, \"Python\"); {python} said: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }
    let status = Command::new(&python)
        .args(["-m", "pinhole", "cohort"])
        .args(&args.args)
        .status()
        .with_context(|| format!("running {python} -m pinhole cohort"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
