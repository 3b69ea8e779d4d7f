//! `pinhole dicom listen`: a DICOM receiver (C-STORE SCP and C-ECHO, `pinhole-dicomnet`)
//! that stores instances as `<study>/<series>/<sop instance>.dcm` and prints one line
//! (or one JSON object) per event. Not for clinical use.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use pinhole_dicomnet::{Event, Listener, ListenerConfig};

use crate::terminal::Terminal;

#[derive(Subcommand)]
pub enum DicomCommand {
    /// Receive DICOM instances from a scanner or PACS (C-STORE, C-ECHO) into a folder,
    /// one line per event; runs until the process is stopped (Ctrl-C). Not for clinical use.
    Listen(ListenArgs),
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
    /// Print events as JSON lines (an `event` field names each) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(command: &DicomCommand, _terminal: &Terminal) -> anyhow::Result<()> {
    match command {
        DicomCommand::Listen(args) => listen(args),
    }
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
    let listener = Listener::bind(config)?;
    eprintln!("Pinhole DICOM receiver (NOT FOR CLINICAL USE)");
    eprintln!(
        "  AE title {} on {}, storing into {}",
        args.ae_title,
        listener.local_addr(),
        args.store.display()
    );
    eprintln!("  C-STORE and C-ECHO; runs until stopped (Ctrl-C)");
    let json = args.json;
    listener.run(move |event: Event| {
        if json {
            match serde_json::to_string(&event) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("warning: event not printable as JSON: {e}"),
            }
        } else {
            println!("{event}");
        }
    });
    Ok(())
}
