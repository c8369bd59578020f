//! A connection's queue of replies from the swarm worker.
//!
//! Bounded like a channel, but it holds no buffer while empty: most of a tracker's
//! connections idle between announces, and a tokio bounded channel allocates its first
//! block of 32 slots and its cache-padded state up front (about 1.4 KiB per connection).
//! Here an idle connection costs one small allocation.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::frame::Frame;

/// Why a push failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds `capacity` messages: the connection does not keep up.
    Full,
    /// The connection is gone, or the worker closed the queue.
    Closed,
}

/// A bounded queue of text frames, one writer (the worker) and one reader (the
/// connection task).
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Frame>,
    closed: bool,
    /// The worker saw the connection hold no peer after its join message number `left`
    /// (see [`Outbox::left_every_swarm`]); 0: no news.
    left: u32,
}

/// What [`Outbox::pop`] returns.
#[derive(Debug)]
pub(crate) enum Popped {
    Frame(Frame),
    /// The connection held no peer in any swarm once the worker had handled its join
    /// messages (announces, standby) up to this number.
    LeftEverySwarm(u32),
    /// Closed and drained.
    Closed,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues a message without waiting.
    pub(crate) fn try_push(&self, msg: Frame) -> Result<(), PushError> {
        {
            let mut s = self.state.lock().expect("not poisoned");
            if s.closed {
                return Err(PushError::Closed);
            }
            if s.queue.len() >= self.capacity {
                return Err(PushError::Full);
            }
            s.queue.push_back(msg);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Tells the reader that the connection holds no peer, its join messages handled up to
    /// number `joins` (1 and up; the latest news replaces any not yet read).
    pub(crate) fn left_every_swarm(&self, joins: u32) {
        self.state.lock().expect("not poisoned").left = joins;
        self.ready.notify_one();
    }

    /// Closes the queue: pushes fail, and the reader gets what is queued, then `None`.
    pub(crate) fn close(&self) {
        self.state.lock().expect("not poisoned").closed = true;
        self.ready.notify_one();
    }

    /// The next message without waiting, if any.
    pub(crate) fn try_pop(&self) -> Option<Frame> {
        let mut s = self.state.lock().expect("not poisoned");
        let msg = s.queue.pop_front();
        if s.queue.is_empty() && s.queue.capacity() > 0 {
            // Back to no buffer at all once drained.
            s.queue = VecDeque::new();
        }
        msg
    }

    /// The next message, waiting for one, or news that the connection left every swarm;
    /// `Closed` once closed and drained. Cancel safe: a dropped `pop` loses no message (they
    /// stay queued) and no wake-up (tokio passes a `notify_one` taken by a dropped waiter on).
    pub(crate) async fn pop(&self) -> Popped {
        loop {
            if let Some(msg) = self.try_pop() {
                return Popped::Frame(msg);
            }
            {
                let mut s = self.state.lock().expect("not poisoned");
                if s.closed {
                    return Popped::Closed;
                }
                let joins = std::mem::take(&mut s.left);
                if joins != 0 {
                    return Popped::LeftEverySwarm(joins);
                }
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn t(text: &str) -> Frame {
        Frame::text(text)
    }

    fn text(popped: Popped) -> Option<String> {
        match popped {
            Popped::Frame(f) => Some(f.payload().to_owned()),
            Popped::Closed => None,
            Popped::LeftEverySwarm(n) => Some(format!("(left {n})")),
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn bounded_ordered_and_closed() {
        let o = Outbox::new(2);
        o.try_push(t("a")).unwrap();
        o.try_push(t("b")).unwrap();
        assert_eq!(o.try_push(t("c")), Err(PushError::Full));
        assert_eq!(text(o.pop().await).as_deref(), Some("a"));
        o.try_push(t("c")).unwrap();
        o.close();
        assert_eq!(o.try_push(t("d")), Err(PushError::Closed));
        // What was queued before the close is still delivered.
        assert_eq!(text(o.pop().await).as_deref(), Some("b"));
        assert_eq!(text(o.pop().await).as_deref(), Some("c"));
        assert!(matches!(o.pop().await, Popped::Closed));
    }

    /// The news that the connection left every swarm comes after the frames queued before
    /// it, once, the latest replacing older news not yet read.
    #[tokio::test]
    async fn leaving_every_swarm_is_told_once_after_the_frames() {
        let o = Outbox::new(4);
        o.try_push(t("a")).unwrap();
        o.left_every_swarm(3);
        o.left_every_swarm(4);
        assert_eq!(text(o.pop().await).as_deref(), Some("a"));
        assert_eq!(text(o.pop().await).as_deref(), Some("(left 4)"));
        o.try_push(t("b")).unwrap();
        assert_eq!(text(o.pop().await).as_deref(), Some("b"));
        o.close();
        assert!(matches!(o.pop().await, Popped::Closed));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_push() {
        let o = Arc::new(Outbox::new(4));
        let reader = tokio::spawn({
            let o = o.clone();
            async move { o.pop().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        o.try_push(t("x")).unwrap();
        let got = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
        assert_eq!(text(got).as_deref(), Some("x"));
    }

    /// A `pop` dropped inside a `select!` (the other branch won) loses no message and no
    /// wake-up: the next `pop` sees the message.
    #[tokio::test]
    async fn a_dropped_pop_loses_nothing() {
        let o = Arc::new(Outbox::new(4));
        for round in 0..100 {
            tokio::select! {
                _ = o.pop() => panic!("nothing was pushed yet"),
                () = tokio::task::yield_now() => {}
            }
            let pusher = {
                let o = o.clone();
                tokio::spawn(async move { o.try_push(t(&format!("m{round}"))).unwrap() })
            };
            pusher.await.unwrap();
            let got = tokio::time::timeout(WAIT, o.pop()).await.unwrap();
            assert_eq!(text(got), Some(format!("m{round}")));
        }
    }

    #[test]
    fn an_idle_outbox_holds_no_buffer() {
        let o = Outbox::new(256);
        o.try_push(t(&"x".repeat(100))).unwrap();
        assert!(o.try_pop().is_some());
        assert_eq!(o.state.lock().unwrap().queue.capacity(), 0);
    }
}
