//! The binary on SIGTERM: clients get a close frame (1001, going away), then it exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn sigterm_closes_clients_then_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarmcdn-tracker"))
        .args(["--listen", "127.0.0.1:0"])
        .env("SWARMCDN_TRACKER_LOG", "warn")
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
