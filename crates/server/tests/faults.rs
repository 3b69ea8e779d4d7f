//! Faults: malformed header, CRC mismatch, BODY_SIZE 2^63, truncated body, disconnect
//! mid-message, 100 simultaneous clients, a stalled client. After each, a good client is
//! still served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pinhole_igtl::{encode, Body, Message, Transform, HEADER_SIZE};

use crate::common::*;

fn pose_bytes(y: f64) -> Vec<u8> {
    let m = pose_ras([0.0, y, 0.0], [0.0, -1.0, 0.0]);
    encode(&Message::new(
        "NeedleTipToReference",
        Body::Transform(Transform::from_matrix(&m)),
    ))
    .unwrap()
}

/// Waits until the server has closed `s` (read returns 0 or an error).
fn assert_closed(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) if Instant::now() < end => continue, // greeting, status replies
            Ok(_) => panic!("{what}: connection still open"),
        }
    }
}

fn still_serving(server: &TestServer, seq: u64) {
    let mut good = server.client();
    good.send_pose(&pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, _) = good.metrics(seq);
    assert_close(
        f(&m["depth_remaining_mm"]),
        10.0,
        1e-6,
        "good client served",
    );
}

#[test]
fn hostile_input_closes_only_that_client() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let stats = || server.running().shared.stats();

    // Malformed header: the TYPE field is not UTF-8.
    let mut bad = TcpStream::connect(("127.0.0.1", server.igtl_port())).unwrap();
    let mut frame = pose_bytes(10.0);
    frame[2] = 0xFF;
    frame[3] = 0xFE;
    bad.write_all(&frame).unwrap();
    assert_closed(&mut bad, "malformed header");
    still_serving(&server, 1);

    // CRC mismatch: skipped with a STATUS 9 reply, the connection stays usable.
    let mut c = server.client();
    let mut frame = pose_bytes(20.0);
    frame[HEADER_SIZE + 5] ^= 0x01;
    c.stream.write_all(&frame).unwrap();
    loop {
        let m = c.recv();
        if let Body::Status(s) = &m.body {
            if s.code == 9 {
                assert!(s.message.contains("CRC"), "{}", s.message);
                break;
            }
        }
    }
    c.send_pose(&pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, _) = c.metrics(2);
    assert_close(f(&m["depth_remaining_mm"]), 10.0, 1e-6, "after a CRC error");
    assert_eq!(m["seq"], 2, "the corrupted pose was not used");

    // BODY_SIZE 2^63: rejected before allocating, client closed.
    let mut huge = TcpStream::connect(("127.0.0.1", server.igtl_port())).unwrap();
    let mut frame = pose_bytes(10.0);
    frame[42..50].copy_from_slice(&(1u64 << 63).to_be_bytes());
    huge.write_all(&frame[..HEADER_SIZE]).unwrap();
    assert_closed(&mut huge, "BODY_SIZE 2^63");
    still_serving(&server, 3);

    // Truncated body: 20 of 48 bytes, then the peer stops sending.
    let mut short = TcpStream::connect(("127.0.0.1", server.igtl_port())).unwrap();
    let frame = pose_bytes(10.0);
    short.write_all(&frame[..HEADER_SIZE + 20]).unwrap();
    short.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed(&mut short, "truncated body");

    // Disconnect in the middle of a header.
    let mut gone = TcpStream::connect(("127.0.0.1", server.igtl_port())).unwrap();
    gone.write_all(&frame[..30]).unwrap();
    drop(gone);
    still_serving(&server, 4);

    // Garbage that keeps failing CRC: closed after max_consecutive_errors.
    let mut noisy = TcpStream::connect(("127.0.0.1", server.igtl_port())).unwrap();
    let mut frame = pose_bytes(10.0);
    frame[HEADER_SIZE] ^= 0x80;
    for _ in 0..20 {
        if noisy.write_all(&frame).is_err() {
            break;
        }
    }
    assert_closed(&mut noisy, "repeated CRC errors");
    still_serving(&server, 5);

    let s = stats();
    assert!(s.decode_errors >= 5, "{s:?}");
    assert!(s.clients_dropped_for_errors >= 4, "{s:?}");
}

#[test]
fn hundred_clients_all_get_the_update() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let mut clients: Vec<Client> = (0..100).map(|_| server.client()).collect();
    // Wait until all are accepted.
    let end = Instant::now() + Duration::from_secs(10);
    while server.running().shared.stats().clients_connected < 100 {
        assert!(Instant::now() < end, "not all clients accepted");
        std::thread::sleep(Duration::from_millis(10));
    }
    clients[0].send_pose(&pose_ras([-3.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    for c in clients.iter_mut() {
        let (m, _) = c.metrics(1);
        assert_close(f(&m["lateral_deviation_mm"]), 3.0, 1e-5, "every client");
    }
    drop(clients);
    let end = Instant::now() + Duration::from_secs(10);
    while server.running().shared.stats().clients_connected > 0 {
        assert!(Instant::now() < end, "clients not cleaned up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stalled_client_does_not_block_others_and_memory_is_bounded() {
    let _heavy = heavy_lock();
    let server = TestServer::start(phantom_session(None), |c| {
        c.write_timeout = Duration::from_millis(1500);
    });
    // Never reads; small receive buffer so it fills quickly.
    let stalled = TcpStream::connect(("127.0.0.1", server.igtl_port())).unwrap();
    let mut sender = server.client();
    let mut watcher = server.client();
    let watcher_seq = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = watcher_seq.clone();
    let _watch = std::thread::spawn(move || {
        while let Some(m) = watcher.try_recv() {
            if let (Body::String(s), "GuidanceMetrics") = (&m.body, m.device_name.as_str()) {
                let v: serde_json::Value = serde_json::from_str(s.as_str().unwrap()).unwrap();
                seen.store(
                    v["seq"].as_u64().unwrap(),
                    std::sync::atomic::Ordering::SeqCst,
                );
            }
        }
    });
    let rss_before = rss_kb();
    let started = Instant::now();
    let n = 4000u64;
    // The sender reads its replies on a thread (a well-behaved client).
    let mut reader = sender_reader(&sender);
    let _drain = std::thread::spawn(move || while reader.try_recv().is_some() {});
    for i in 0..n {
        sender.send_pose(&pose_ras(
            [0.0, 10.0 + (i % 7) as f64, 0.0],
            [0.0, -1.0, 0.0],
        ));
    }
    // Meanwhile others are served promptly, and the watcher sees the newest update (newest-wins; it may skip stale ones).
    let end = Instant::now() + Duration::from_secs(10);
    while watcher_seq.load(std::sync::atomic::Ordering::SeqCst) < n {
        assert!(Instant::now() < end, "watcher never saw the newest update");
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    // The stalled client is dropped once its socket stays full for the write timeout.
    let end = Instant::now() + Duration::from_secs(15);
    while server.running().shared.stats().clients_dropped_stalled == 0 {
        // Keep updates flowing so the stalled writer keeps trying.
        for _ in 0..20 {
            sender.send_pose(&pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
        }
        assert!(Instant::now() < end, "stalled client never dropped");
        std::thread::sleep(Duration::from_millis(10));
    }
    let growth_kb = rss_kb().saturating_sub(rss_before);
    assert!(
        growth_kb < 64 * 1024,
        "memory grew by {growth_kb} kB with a stalled client"
    );
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    drop(stalled);
}

/// A second reader on the same socket as `c` (for a thread that drains replies).
fn sender_reader(c: &Client) -> Client {
    let stream = c.stream.try_clone().unwrap();
    let reader = std::io::BufReader::new(stream.try_clone().unwrap());
    Client::from_parts(stream, reader)
}
