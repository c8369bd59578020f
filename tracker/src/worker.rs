//! The swarm worker: the one task that owns the registry.

use std::collections::HashMap;

use std::sync::Arc;

use swarmcdn_core::registry::{ConnId, Registry, RegistryConfig, RegistryStats};
use swarmcdn_core::time::Time;
use swarmcdn_core::tracker_proto::ToTracker;
use tokio::sync::{mpsc, oneshot};

use crate::frame::Frame;
use crate::outbox::Outbox;

/// What connection tasks tell the worker.
#[derive(Debug)]
pub(crate) enum ToWorker {
    /// A client connected; its replies (text frames) go to `outbox`.
    Open { conn: ConnId, outbox: Arc<Outbox> },
    /// A decoded message from a client.
    /// `joins`: how many join messages (announces, standby) the connection has sent, this
    /// one included.
    Message {
        conn: ConnId,
        msg: Box<ToTracker>,
        joins: u32,
    },
    /// A client is gone: its peers leave every swarm.
    Close { conn: ConnId },
    /// A snapshot of the registry's counters, for `/stats` and `/metrics`.
    Stats(oneshot::Sender<RegistryStats>),
}

/// Asks the worker for its counters (None if it is gone).
pub(crate) async fn stats(tx: &mpsc::Sender<ToWorker>) -> Option<RegistryStats> {
    let (reply, rx) = oneshot::channel();
    tx.send(ToWorker::Stats(reply)).await.ok()?;
    rx.await.ok()
}

/// Runs until every sender is dropped.
pub(crate) async fn run(config: RegistryConfig, seed: u64, mut rx: mpsc::Receiver<ToWorker>) {
    let mut registry = Registry::new(config, seed).expect("validated at startup");
    let epoch = tokio::time::Instant::now();
    let now = || Time::from_micros(epoch.elapsed().as_micros() as u64);
    // Each connection's queue, and the number of its last join message handled.
    let mut conns: HashMap<ConnId, (Arc<Outbox>, u32)> = HashMap::new();
    let mut out = Vec::new();
    let mut emptied = Vec::new();
    // One timer, moved only when the registry's next deadline moves: arming a new one for
    // every message costs a timer-wheel entry and a wake-up of the runtime's driver each.
    let timer = tokio::time::sleep_until(epoch);
    tokio::pin!(timer);
    let mut armed = None;
    loop {
        let deadline = registry
            .poll_timeout()
            .map(|t| epoch + std::time::Duration::from_micros(t.as_micros()));
        if deadline != armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d);
            }
            armed = deadline;
        }
        let msg = tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => m,
                None => break,
            },
            () = &mut timer, if armed.is_some() => {
                armed = None;
                registry.handle_timeout_emptying(now(), &mut emptied);
                // Their last peers expired: again connections that have not joined.
                for conn in emptied.drain(..) {
                    if let Some((outbox, joins)) = conns.get(&conn)
                        && *joins > 0
                    {
                        outbox.left_every_swarm(*joins);
                    }
                }
                continue;
            }
        };
        match msg {
            ToWorker::Open { conn, outbox } => {
                conns.insert(conn, (outbox, 0));
            }
            ToWorker::Message { conn, msg, joins } => {
                // A connection dropped as a slow reader may still have messages in flight:
                // ignore them, or its peers would rejoin swarms until its `Close` arrives.
                if let Some((outbox, handled)) = conns.get_mut(&conn) {
                    *handled = joins;
                    let join = matches!(&*msg, ToTracker::Announce(_) | ToTracker::Standby(_));
                    registry.handle_message(now(), conn, *msg, &mut out);
                    // A join message (`stopped`, or an announce refused) that leaves it no
                    // peer makes it again a connection that has not joined: its task's join
                    // timeout runs anew, unless it has sent another join message since.
                    if join && joins > 0 && !registry.holds_peers(conn) {
                        outbox.left_every_swarm(joins);
                    }
                }
            }
            ToWorker::Close { conn } => {
                conns.remove(&conn);
                registry.handle_disconnect(conn);
            }
            ToWorker::Stats(reply) => {
                let _ = reply.send(registry.stats());
            }
        }
        for (conn, reply) in out.drain(..) {
            let Some((outbox, _)) = conns.get(&conn) else {
                continue;
            };
            if outbox.try_push(Frame::message(&reply)).is_err() {
                // Full (a slow reader) or closed: drop it. Its task sees the queue close and
                // says goodbye; its peers leave the swarms now.
                outbox.close();
                conns.remove(&conn);
                registry.handle_disconnect(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use swarmcdn_core::ids::{PeerId, SwarmId};
    use swarmcdn_core::tracker_proto::{Announce, AnnounceEvent, Scrape};

    use super::*;
    use crate::outbox::Popped;

    const WAIT: Duration = Duration::from_secs(5);

    fn announce(peer: u8) -> Box<ToTracker> {
        Box::new(ToTracker::Announce(Announce {
            event: Some(AnnounceEvent::Started),
            ..Announce::new(SwarmId([1; 20]), PeerId([peer; 20]))
        }))
    }

    fn scrape() -> Box<ToTracker> {
        Box::new(ToTracker::Scrape(Scrape {
            info_hashes: vec![SwarmId([1; 20])],
        }))
    }

    /// A connection that does not drain its queue is dropped (its peers leave), and the worker
    /// keeps serving the others; messages it still sends afterwards are ignored.
    #[tokio::test]
    async fn a_full_outgoing_queue_drops_only_that_connection() {
        let (tx, rx) = mpsc::channel(16);
        let worker = tokio::spawn(run(RegistryConfig::default(), 1, rx));
        let slow_box = Arc::new(Outbox::new(1));
        let fast_box = Arc::new(Outbox::new(16));
        let (slow, fast) = (ConnId(1), ConnId(2));
        tx.send(ToWorker::Open {
            conn: slow,
            outbox: slow_box.clone(),
        })
        .await
        .unwrap();
        tx.send(ToWorker::Open {
            conn: fast,
            outbox: fast_box.clone(),
        })
        .await
        .unwrap();
        // The announce reply fills the slow queue; the scrape reply overflows it.
        for msg in [announce(1), scrape(), announce(1)] {
            tx.send(ToWorker::Message {
                conn: slow,
                msg,
                joins: 0,
            })
            .await
            .unwrap();
        }
        tx.send(ToWorker::Message {
            conn: fast,
            msg: announce(2),
            joins: 1,
        })
        .await
        .unwrap();
        let Popped::Frame(first) = tokio::time::timeout(WAIT, slow_box.pop()).await.unwrap() else {
            panic!("the reply that fitted");
        };
        let first = first.payload();
        assert!(first.contains("interval"), "{first}");
        assert!(
            matches!(
                tokio::time::timeout(WAIT, slow_box.pop()).await.unwrap(),
                Popped::Closed
            ),
            "the slow connection's queue is closed"
        );
        let Popped::Frame(reply) = tokio::time::timeout(WAIT, fast_box.pop()).await.unwrap() else {
            panic!("a reply");
        };
        let reply = reply.payload();
        assert!(
            reply.contains("\"incomplete\":1"),
            "only the fast peer is left: {reply}"
        );
        let s = tokio::time::timeout(WAIT, stats(&tx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((s.swarms, s.peers), (1, 1));
        drop(tx);
        tokio::time::timeout(WAIT, worker).await.unwrap().unwrap();
    }
}
