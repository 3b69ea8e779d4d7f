//! The listener: binding, accepting, bounding the associations, rejecting, shutting
//! down.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, Scope};
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource,
};
use dicom_ul::Pdu;

use crate::config::ListenerConfig;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::series::SeriesTable;

/// How often the accept loop looks at the stop flag when no connection comes.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// Connections being rejected at once (each on a short-lived thread); more are closed
/// without an A-ASSOCIATE-RJ.
const MAX_REJECTING: usize = 4;
/// How long a rejected peer has to send its A-ASSOCIATE-RQ and take the answer.
const REJECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Stack of an association thread (dicom-rs recursion is bounded by the sequence depth
/// check, this leaves a wide margin).
const ASSOCIATION_STACK_BYTES: usize = 8 << 20;

/// What every thread of a listener shares.
pub(crate) struct Shared {
    pub config: ListenerConfig,
    stop: AtomicBool,
    active: AtomicUsize,
    rejecting: AtomicUsize,
    next_id: AtomicU64,
    /// A clone of each open association's socket, to cut it at shutdown.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    series: Mutex<SeriesTable>,
    /// Wakes the series watcher at shutdown.
    pub wake: Condvar,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn lock_series(&self) -> MutexGuard<'_, SeriesTable> {
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_sockets(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _guard = self.lock_series();
        self.wake.notify_all();
    }
}

/// A bound, not yet serving, C-STORE / C-ECHO listener.
pub struct Listener {
    tcp: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Listener {
    /// Validates `config`, creates `store_dir` if needed and binds the socket. Nothing
    /// is accepted until [`Listener::run`] or [`Listener::spawn`].
    pub fn bind(config: ListenerConfig) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(&config.store_dir).map_err(|source| Error::StoreDir {
            path: config.store_dir.clone(),
            source,
        })?;
        if !config.store_dir.is_dir() {
            return Err(Error::StoreDir {
                path: config.store_dir.clone(),
                source: std::io::Error::other("not a folder"),
            });
        }
        let tcp = TcpListener::bind(config.bind).map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        tcp.set_nonblocking(true)?;
        let local_addr = tcp.local_addr()?;
        Ok(Self {
            tcp,
            local_addr,
            shared: Arc::new(Shared {
                config,
                stop: AtomicBool::new(false),
                active: AtomicUsize::new(0),
                rejecting: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                sockets: Mutex::new(HashMap::new()),
                series: Mutex::new(SeriesTable::default()),
                wake: Condvar::new(),
            }),
        })
    }

    /// The address actually bound (the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The validated configuration.
    pub fn config(&self) -> &ListenerConfig {
        &self.shared.config
    }

    /// Serves on the calling thread until the process ends. `events` is called on one
    /// thread, in order per association.
    pub fn run(self, events: impl FnMut(Event) + Send) {
        serve(&self.tcp, &self.shared, events);
    }

    /// Serves on a new thread; the handle stops it. `events` is called on one thread,
    /// in order per association.
    pub fn spawn(self, events: impl FnMut(Event) + Send + 'static) -> Result<ListenerHandle> {
        let shared = Arc::clone(&self.shared);
        let local_addr = self.local_addr;
        let thread = thread::Builder::new()
            .name("dicom-listener".into())
            .spawn(move || serve(&self.tcp, &self.shared, events))?;
        Ok(ListenerHandle {
            shared,
            local_addr,
            thread: Some(thread),
        })
    }
}

/// A listener serving on its own thread. Dropping it shuts it down like
/// [`ListenerHandle::shutdown`].
pub struct ListenerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl ListenerHandle {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, cuts the open associations (a data set being received is
    /// dropped, never written), waits for every thread and for the last events to be
    /// delivered. Series still waiting for their quiet time are not reported.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.shared.request_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The listener's life: event dispatcher, series watcher, accept loop and association
/// threads, all scoped to this call; returns once stopped and everything is joined.
fn serve(tcp: &TcpListener, shared: &Shared, mut events: impl FnMut(Event) + Send) {
    thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Event>();
        scope.spawn(move || {
            for event in rx {
                events(event);
            }
        });
        let watcher_tx = tx.clone();
        scope.spawn(move || crate::series::watch(shared, watcher_tx));
        accept_loop(scope, tcp, shared, &tx);
        // Stopping: cut every open association so that its thread ends.
        for (_, socket) in shared.lock_sockets().drain() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    });
}

fn accept_loop<'scope>(
    scope: &'scope Scope<'scope, '_>,
    tcp: &TcpListener,
    shared: &'scope Shared,
    tx: &Sender<Event>,
) {
    while !shared.stopping() {
        match tcp.accept() {
            Ok((stream, peer)) => connection(scope, stream, peer, shared, tx),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Out of file descriptors and the like: say so, wait, go on.
                let _ = tx.send(Event::Warning {
                    message: format!("accepting a connection failed: {e}"),
                });
                thread::sleep(ACCEPT_POLL * 4);
            }
        }
    }
}

/// Why a connection is turned away before dicom-ul negotiates.
enum Turned {
    PeerNotAllowed,
    NoResources(usize),
}

impl Turned {
    fn reason(&self) -> String {
        match self {
            Turned::PeerNotAllowed => "peer address not allowed".into(),
            Turned::NoResources(n) => {
                format!("no resources: {n} association(s) already open (max_associations)")
            }
        }
    }

    fn pdu(&self) -> Pdu {
        let (result, source) = match self {
            Turned::PeerNotAllowed => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven),
            ),
            Turned::NoResources(_) => (
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                ),
            ),
        };
        Pdu::AssociationRJ(AssociationRJ { result, source })
    }
}

/// Removes an association's traces when its thread ends, however it ends.
struct ActiveGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock_sockets().remove(&self.id);
        self.shared.lock_series().set_busy(self.id, false);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn connection<'scope>(
    scope: &'scope Scope<'scope, '_>,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &'scope Shared,
    tx: &Sender<Event>,
) {
    // Accepted sockets must block (with timeouts) whatever the listener's mode, and send
    // a small C-STORE-RSP at once: with Nagle's algorithm it can wait for the peer's
    // delayed ACK, and the peer sends its next instance only after the response.
    if let Err(e) = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
    {
        let _ = tx.send(Event::Warning {
            message: format!("connection from {peer} dropped: {e}"),
        });
        return;
    }
    if !shared.config.peer_allowed(peer.ip()) {
        return reject(scope, stream, peer, Turned::PeerNotAllowed, shared, tx);
    }
    let open = shared.active.fetch_add(1, Ordering::SeqCst);
    if open >= shared.config.max_associations {
        shared.active.fetch_sub(1, Ordering::SeqCst);
        return reject(scope, stream, peer, Turned::NoResources(open), shared, tx);
    }
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    if let Ok(clone) = stream.try_clone() {
        shared.lock_sockets().insert(id, clone);
    }
    let guard = ActiveGuard { shared, id };
    let tx_thread = tx.clone();
    let spawned = thread::Builder::new()
        .name(format!("dicom-association-{id}"))
        .stack_size(ASSOCIATION_STACK_BYTES)
        .spawn_scoped(scope, move || {
            let _guard = guard;
            crate::association::serve(shared, id, stream, peer, &tx_thread);
        });
    if let Err(e) = spawned {
        // The closure (and with it the guard and the stream) was dropped.
        let _ = tx.send(Event::Warning {
            message: format!("connection from {peer} dropped: no thread: {e}"),
        });
    }
}

/// Answers an A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ on a short-lived thread (at most
/// [`MAX_REJECTING`] at once; beyond that the connection is just closed).
fn reject<'scope>(
    scope: &'scope Scope<'scope, '_>,
    stream: TcpStream,
    peer: SocketAddr,
    turned: Turned,
    shared: &'scope Shared,
    tx: &Sender<Event>,
) {
    let _ = tx.send(Event::AssociationRejected {
        peer,
        reason: turned.reason(),
    });
    if shared.rejecting.fetch_add(1, Ordering::SeqCst) >= MAX_REJECTING {
        shared.rejecting.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let max_pdu_bytes = shared.config.max_pdu_bytes;
    let spawned = thread::Builder::new()
        .name("dicom-reject".into())
        .spawn_scoped(scope, move || {
            let _ = send_rejection(stream, &turned.pdu(), max_pdu_bytes);
            shared.rejecting.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        shared.rejecting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads (and discards, without buffering it) the peer's A-ASSOCIATE-RQ so that the
/// close is orderly, sends `rejection`, closes.
fn send_rejection(
    mut stream: TcpStream,
    rejection: &Pdu,
    max_pdu_bytes: u32,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REJECT_TIMEOUT))?;
    stream.set_write_timeout(Some(REJECT_TIMEOUT))?;
    let mut header = [0u8; 6];
    stream.read_exact(&mut header)?;
    let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    if header[0] == 0x01 && length <= max_pdu_bytes {
        let copied = std::io::copy(
            &mut (&mut stream).take(u64::from(length)),
            &mut std::io::sink(),
        )?;
        if copied == u64::from(length) {
            let mut bytes = Vec::new();
            dicom_ul::write_pdu(&mut bytes, rejection).map_err(std::io::Error::other)?;
            stream.write_all(&bytes)?;
            stream.flush()?;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Let the peer read the answer before the socket closes.
    let mut sink = [0u8; 256];
    let mut left = 64 * 1024usize;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    Ok(())
}
