//! The binary on SIGTERM: clients get a close frame (1001, going away), then it exits 0; on
//! one thread (`threads = 1`, a current-thread runtime) as on one per core.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use swarmcdn_core::tracker_proto::FromTracker;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn sigterm_closes_clients_then_exits() {
    relay_then_sigterm("0").await;
}

#[tokio::test]
async fn on_one_thread_too() {
    relay_then_sigterm("1").await;
}

async fn relay_then_sigterm(threads: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarmcdn-tracker"))
        .args(["--listen", "127.0.0.1:0"])
        .env("SWARMCDN_TRACKER_LOG", "warn")
        .env("SWARMCDN_TRACKER__THREADS", threads)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ws://")
        .unwrap()
        .parse()
        .unwrap();
    let mut a = Client::connect(addr).await;
    a.send(&announce(1, 1, 0)).await;
    let _ = a.recv().await;
    let mut b = Client::connect(addr).await;
    b.send(&announce(1, 2, 1)).await;
    let _ = b.recv().await;
    let FromTracker::Offer(offer) = a.recv().await else {
        panic!("relayed offer")
    };
    assert_eq!(offer.peer_id, peer(2));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let frame = a.closed().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Away);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
