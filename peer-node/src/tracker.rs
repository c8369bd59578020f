//! The tracker client: one WebSocket to the tracker chosen for the swarm by rendezvous
//! hashing (the next ones in rank order on failure), reconnecting with backoff.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use swarmcdn_core::ids::SwarmId;
use swarmcdn_core::tracker_proto::FromTracker;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::driver::Input;

/// What the tracker connection reports to the node loop.
#[derive(Debug)]
pub enum TrackerEvent {
    /// Connected (first time or again).
    Connected(String),
    /// The connection dropped.
    Disconnected,
    /// A message.
    Message(Box<FromTracker>),
}

/// The tracker URLs in the order this swarm uses them (rendezvous hashing, as every client).
pub fn ranked(swarm: &SwarmId, trackers: &[String]) -> Vec<String> {
    swarmcdn_core::rendezvous::rank(swarm, trackers)
        .into_iter()
        .cloned()
        .collect()
}

impl From<TrackerEvent> for Input {
    fn from(e: TrackerEvent) -> Self {
        Self::Tracker(e)
    }
}

/// Runs until `outgoing` is closed (its owner is done): connects, sends `hello` (if any) on
/// each connection, forwards messages both ways, reconnects after failures with backoff (1 s
/// doubling to 30 s), moving down the ranked list each time a tracker cannot be reached.
pub async fn run<T: From<TrackerEvent> + Send + 'static>(
    urls: Vec<String>,
    hello: Option<String>,
    mut outgoing: mpsc::Receiver<String>,
    inputs: mpsc::Sender<T>,
) {
    if urls.is_empty() {
        // No tracker: HTTP only. Wait for the node loop to finish.
        while outgoing.recv().await.is_some() {}
        return;
    }
    let mut backoff = Duration::from_secs(1);
    let mut index = 0usize;
    loop {
        // Messages queued while disconnected are stale (the node announces again).
        while outgoing.try_recv().is_ok() {}
        let url = &urls[index % urls.len()];
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await;
        match connect {
            Ok(Ok((mut ws, _))) => {
                tracing::info!(tracker = %url, "connected to tracker");
                backoff = Duration::from_secs(1);
                if let Some(h) = &hello
                    && let Err(e) = ws.send(Message::text(h.clone())).await
                {
                    tracing::warn!(tracker = %url, error = %e, "tracker send failed");
                    continue;
                }
                if inputs
                    .send(TrackerEvent::Connected(url.clone()).into())
                    .await
                    .is_err()
                {
                    return;
                }
                let done = loop {
                    tokio::select! {
                        out = outgoing.recv() => match out {
                            Some(text) => {
                                if let Err(e) = ws.send(Message::text(text)).await {
                                    tracing::warn!(tracker = %url, error = %e, "tracker send failed");
                                    break false;
                                }
                            }
                            None => {
                                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                                break true;
                            }
                        },
                        msg = ws.next() => match msg {
                            Some(Ok(Message::Text(t))) => match FromTracker::from_json(t.as_bytes()) {
                                Ok(m) => {
                                    if inputs.send(TrackerEvent::Message(Box::new(m)).into()).await.is_err() {
                                        return;
                                    }
                                }
                                Err(e) => tracing::warn!(tracker = %url, error = %e, "bad tracker message ignored"),
                            },
                            Some(Ok(Message::Close(frame))) => {
                                tracing::warn!(tracker = %url, ?frame, "tracker closed the connection");
                                break false;
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(tracker = %url, error = %e, "tracker connection failed");
                                break false;
                            }
                            None => break false,
                        },
                    }
                };
                if inputs
                    .send(TrackerEvent::Disconnected.into())
                    .await
                    .is_err()
                    || done
                {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(tracker = %url, error = %e, "cannot reach tracker");
                index += 1;
            }
            Err(_) => {
                tracing::warn!(tracker = %url, "tracker connect timed out");
                index += 1;
            }
        }
        // Back off, but leave at once when the node loop is done.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                m = outgoing.recv() => if m.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
