//! What a listener is and whom it serves: [`ListenerConfig`], checked by
//! [`ListenerConfig::validate`] before anything is bound.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default number of associations served at once.
pub const DEFAULT_MAX_ASSOCIATIONS: usize = 8;
/// Default largest P-DATA PDU this node receives (the PDU length field, header excluded).
pub const DEFAULT_MAX_PDU_BYTES: u32 = 16_384;
/// Smallest `max_pdu_bytes` accepted (dicom-ul's minimum, 1024 bytes less the header).
pub const MIN_PDU_BYTES: u32 = 1_018;
/// Largest `max_pdu_bytes` accepted: a peer may make this node buffer one PDU of it.
pub const MAX_PDU_BYTES: u32 = 16 << 20;
/// Default time an association may stay silent before it is aborted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default quiet time after which a series counts as complete.
pub const DEFAULT_SERIES_QUIET: Duration = Duration::from_secs(5);
/// Default largest data set (one instance) accepted, in bytes.
pub const DEFAULT_MAX_INSTANCE_BYTES: u64 = 1 << 30;
/// Most associations one listener may be configured to serve at once.
pub const MAX_ASSOCIATIONS_LIMIT: usize = 1024;

/// A C-STORE / C-ECHO listener's settings. Build with [`ListenerConfig::new`], change
/// fields, and hand to [`crate::Listener::bind`], which validates them first.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// This node's AE title: 1–16 characters of the DICOM AE repertoire (printable
    /// ASCII, no backslash), no leading or trailing space. Associations that call
    /// another AE title are rejected ("called AE title not recognized").
    pub ae_title: String,
    /// Address and port to listen on (port 0: a free port, see
    /// [`crate::Listener::local_addr`]).
    pub bind: SocketAddr,
    /// Peer IP addresses allowed to associate; `None` allows any. IPv4-mapped IPv6
    /// addresses are compared as IPv4.
    pub allowed_peers: Option<Vec<IpAddr>>,
    /// Calling AE titles allowed to associate (exact match); `None` allows any.
    pub calling_ae_allowed: Option<Vec<String>>,
    /// Root of the storage layout `<study>/<series>/<sop instance>.dcm`; created if absent.
    pub store_dir: PathBuf,
    /// Associations served at once; more are rejected with an A-ASSOCIATE-RJ
    /// (transient, "local limit exceeded").
    pub max_associations: usize,
    /// Largest PDU this node receives (offered in the A-ASSOCIATE-AC); a PDU whose
    /// header claims more is refused before anything is allocated for it.
    pub max_pdu_bytes: u32,
    /// An association silent for this long is aborted (also bounds each write).
    pub idle_timeout: Duration,
    /// A series is reported complete when no instance of it arrived for this long.
    pub series_quiet: Duration,
    /// Largest data set (one instance) accepted; a larger one is read and discarded
    /// and answered with status 0xA700 (out of resources).
    pub max_instance_bytes: u64,
}

impl ListenerConfig {
    /// A configuration with the defaults: any peer, any calling AE,
    /// [`DEFAULT_MAX_ASSOCIATIONS`], [`DEFAULT_MAX_PDU_BYTES`],
    /// [`DEFAULT_IDLE_TIMEOUT`], [`DEFAULT_SERIES_QUIET`],
    /// [`DEFAULT_MAX_INSTANCE_BYTES`].
    pub fn new(
        ae_title: impl Into<String>,
        bind: SocketAddr,
        store_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            ae_title: ae_title.into(),
            bind,
            allowed_peers: None,
            calling_ae_allowed: None,
            store_dir: store_dir.into(),
            max_associations: DEFAULT_MAX_ASSOCIATIONS,
            max_pdu_bytes: DEFAULT_MAX_PDU_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            series_quiet: DEFAULT_SERIES_QUIET,
            max_instance_bytes: DEFAULT_MAX_INSTANCE_BYTES,
        }
    }

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, message: String| Error::Config { field, message };
        check_ae_title(&self.ae_title).map_err(|m| bad("ae_title", m))?;
        if let Some(titles) = &self.calling_ae_allowed {
            if titles.is_empty() {
                return Err(bad(
                    "calling_ae_allowed",
                    "empty list (None allows any calling AE)".into(),
                ));
            }
            for title in titles {
                check_ae_title(title).map_err(|m| bad("calling_ae_allowed", m))?;
            }
        }
        if self.allowed_peers.as_ref().is_some_and(Vec::is_empty) {
            return Err(bad(
                "allowed_peers",
                "empty list (None allows any peer)".into(),
            ));
        }
        if self.store_dir.as_os_str().is_empty() {
            return Err(bad("store_dir", "empty path".into()));
        }
        if !(1..=MAX_ASSOCIATIONS_LIMIT).contains(&self.max_associations) {
            return Err(bad(
                "max_associations",
                format!(
                    "{} is outside 1..={MAX_ASSOCIATIONS_LIMIT}",
                    self.max_associations
                ),
            ));
        }
        if !(MIN_PDU_BYTES..=MAX_PDU_BYTES).contains(&self.max_pdu_bytes) {
            return Err(bad(
                "max_pdu_bytes",
                format!(
                    "{} is outside {MIN_PDU_BYTES}..={MAX_PDU_BYTES}",
                    self.max_pdu_bytes
                ),
            ));
        }
        if self.idle_timeout < Duration::from_millis(100) {
            return Err(bad(
                "idle_timeout",
                format!("{:?} is shorter than 100 ms", self.idle_timeout),
            ));
        }
        if self.series_quiet.is_zero() || self.series_quiet > Duration::from_secs(86_400) {
            return Err(bad(
                "series_quiet",
                format!("{:?} is outside (0 s, 1 day]", self.series_quiet),
            ));
        }
        if self.max_instance_bytes < 1024 {
            return Err(bad(
                "max_instance_bytes",
                format!("{} is below 1024", self.max_instance_bytes),
            ));
        }
        Ok(())
    }

    /// True when `ip` may associate (see [`Self::allowed_peers`]).
    pub fn peer_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allowed_peers
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a.to_canonical() == ip))
    }

    /// True when `calling_ae` may associate (see [`Self::calling_ae_allowed`]).
    pub fn calling_ae_permitted(&self, calling_ae: &str) -> bool {
        self.calling_ae_allowed
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == calling_ae))
    }
}

/// Checks an AE title: 1–16 characters of the DICOM default repertoire without
/// backslash and control characters, no leading or trailing space (they are not
/// significant on the wire, so a title with them could never match).
pub fn check_ae_title(title: &str) -> std::result::Result<(), String> {
    if title.is_empty() || title.len() > 16 {
        return Err(format!("AE title {title:?} must have 1 to 16 characters"));
    }
    if let Some(c) = title
        .chars()
        .find(|&c| !(' '..='~').contains(&c) || c == '\\')
    {
        return Err(format!(
            "AE title {title:?} holds {c:?} (printable ASCII without backslash only)"
        ));
    }
    if title.trim() != title {
        return Err(format!("AE title {title:?} has leading or trailing spaces"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ListenerConfig {
        ListenerConfig::new("PINHOLE", "127.0.0.1:0".parse().unwrap(), "/tmp/x")
    }

    #[test]
    fn defaults_are_valid_and_each_bad_field_is_named() {
        config().validate().unwrap();
        type Change = Box<dyn Fn(&mut ListenerConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("ae_title", Box::new(|c| c.ae_title = String::new())),
            ("ae_title", Box::new(|c| c.ae_title = "A".repeat(17))),
            ("ae_title", Box::new(|c| c.ae_title = "A\\B".into())),
            ("ae_title", Box::new(|c| c.ae_title = " AB".into())),
            ("ae_title", Box::new(|c| c.ae_title = "É".into())),
            (
                "calling_ae_allowed",
                Box::new(|c| c.calling_ae_allowed = Some(vec![])),
            ),
            (
                "calling_ae_allowed",
                Box::new(|c| c.calling_ae_allowed = Some(vec!["a\nb".into()])),
            ),
            (
                "allowed_peers",
                Box::new(|c| c.allowed_peers = Some(vec![])),
            ),
            ("store_dir", Box::new(|c| c.store_dir = PathBuf::new())),
            ("max_associations", Box::new(|c| c.max_associations = 0)),
            ("max_pdu_bytes", Box::new(|c| c.max_pdu_bytes = 100)),
            ("max_pdu_bytes", Box::new(|c| c.max_pdu_bytes = u32::MAX)),
            (
                "idle_timeout",
                Box::new(|c| c.idle_timeout = Duration::ZERO),
            ),
            (
                "series_quiet",
                Box::new(|c| c.series_quiet = Duration::ZERO),
            ),
            ("max_instance_bytes", Box::new(|c| c.max_instance_bytes = 1)),
        ];
        for (field, change) in cases {
            let mut c = config();
            change(&mut c);
            match c.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn peers_compare_mapped_ipv4_as_ipv4() {
        let mut c = config();
        assert!(c.peer_allowed("10.1.2.3".parse().unwrap()));
        c.allowed_peers = Some(vec!["127.0.0.1".parse().unwrap()]);
        assert!(c.peer_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.peer_allowed("127.0.0.2".parse().unwrap()));
        c.calling_ae_allowed = Some(vec!["SCU".into()]);
        assert!(c.calling_ae_permitted("SCU"));
        assert!(!c.calling_ae_permitted("scu"));
    }
}
