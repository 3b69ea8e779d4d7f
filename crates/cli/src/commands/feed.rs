//! `pinhole dicom listen --feed-control-ct URL`: each complete CT series the listener
//! receives is read (`pinhole-io`'s DICOM series reader: geometry, rescale, every check),
//! written as NIfTI in memory and posted to a running `pinhole serve`'s
//! `POST /api/control-ct`, which registers it to the planning CT and checks the needle
//! (`docs/api.md`). One worker thread, newest first: a series still waiting when a newer
//! one completes is skipped (the server would supersede it anyway). Plain HTTP/1.1 over a
//! std socket: the server is on this machine or reached through a tunnel (it accepts a
//! bearer token, `PINHOLE_TOKEN`, beyond loopback). Not for clinical use.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use anyhow::{bail, Context};

/// Bound on connecting to the server and on each read or write.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Where `http://HOST:PORT` points.
#[derive(Debug, Clone)]
pub struct ServerUrl {
    host: String,
    port: u16,
}

impl std::str::FromStr for ServerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s}: give http://HOST:PORT of a running `pinhole serve` (https is not spoken here: use a tunnel)"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(format!(
                "{s}: give the server's address only, http://HOST:PORT"
            ));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("{s}: no port (http://HOST:PORT)"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s}: port {port} is not 1-65535"))?;
        if host.is_empty() {
            return Err(format!("{s}: no host"));
        }
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// The worker that feeds complete series to the server; `feed` never blocks.
pub struct ControlCtFeed {
    queue: Sender<(String, PathBuf)>,
}

impl ControlCtFeed {
    /// Starts the worker; `report(line, is_warning)` gets one line per series.
    pub fn start(
        url: ServerUrl,
        token: Option<String>,
        report: impl Fn(String, bool) + Send + 'static,
    ) -> Self {
        let (queue, incoming) = mpsc::channel();
        std::thread::spawn(move || worker(&url, token.as_deref(), &incoming, &report));
        Self { queue }
    }

    /// Queues the complete series `series_uid` stored in `folder`.
    pub fn feed(&self, series_uid: &str, folder: &Path) {
        let _ = self
            .queue
            .send((series_uid.to_owned(), folder.to_path_buf()));
    }
}

fn worker(
    url: &ServerUrl,
    token: Option<&str>,
    incoming: &Receiver<(String, PathBuf)>,
    report: &dyn Fn(String, bool),
) {
    while let Ok(mut next) = incoming.recv() {
        // Newest first: older series still queued are superseded.
        while let Ok(newer) = incoming.try_recv() {
            report(
                format!(
                    "control CT feed: series {} skipped, superseded by a newer one",
                    next.0
                ),
                true,
            );
            next = newer;
        }
        let (series_uid, folder) = next;
        match feed_one(url, token, &series_uid, &folder) {
            Ok(Some(answer)) => report(
                format!(
                    "control CT feed: series {series_uid} posted to {url}/api/control-ct: {answer}"
                ),
                false,
            ),
            Ok(None) => {}
            Err(e) => report(
                format!("control CT feed: series {series_uid} not posted to {url}: {e:#}"),
                true,
            ),
        }
    }
}

/// Reads the series and posts it; `None` when it is not a CT (not fed, no warning).
fn feed_one(
    url: &ServerUrl,
    token: Option<&str>,
    series_uid: &str,
    folder: &Path,
) -> anyhow::Result<Option<String>> {
    let options = pinhole_io::dicom::DicomOptions {
        series_uid: Some(series_uid.to_owned()),
    };
    let series = pinhole_io::dicom::read_series(folder, &options, &mut |_, _| {})
        .map_err(|e| anyhow::anyhow!(pinhole_io::error::error_chain(&e)))?;
    if !series.info.modality.eq_ignore_ascii_case("CT") {
        return Ok(None);
    }
    let body = pinhole_io::nifti::to_gzip_bytes(&series.volume, "control.nii.gz")
        .map_err(|e| anyhow::anyhow!(pinhole_io::error::error_chain(&e)))?;
    let (status, answer) = post(url, token, "/api/control-ct", &body)?;
    if status != 202 {
        bail!("HTTP {status}: {}", answer.trim());
    }
    Ok(Some(answer.trim().to_owned()))
}

/// One HTTP/1.1 POST; the status and the body of the answer (at most 64 KiB read).
fn post(
    url: &ServerUrl,
    token: Option<&str>,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {url}"))?
        .next()
        .with_context(|| format!("{url} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to {url} (is `pinhole serve` running?)"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let host = url.to_string();
    let host = host.trim_start_matches("http://");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n{authorization}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("{url} answered no HTTP status"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        let u: ServerUrl = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:8080");
        let u: ServerUrl = "http://[::1]:9/".parse().unwrap();
        assert_eq!(u.to_string(), "http://[::1]:9");
        for bad in [
            "https://x:1",
            "127.0.0.1:8080",
            "http://x",
            "http://x:0",
            "http://:80",
            "http://x:80/api",
        ] {
            assert!(bad.parse::<ServerUrl>().is_err(), "{bad}");
        }
    }
}
