//! The task between the alert queue and the robot: at most `per_window` messages in any
//! `window` (DingTalk: 20 a minute). One waiting alert is sent as its own message; when
//! several are waiting (a burst, or while the window is full) they go out together as one
//! summary. A summary is at most [`MAX_TEXT`] bytes: lines that do not fit wait for the
//! next message. At most [`MAX_PENDING`] alerts wait; past that they are dropped, counted,
//! and the next summary says how many (every alert is also in the node's log).

use std::{collections::VecDeque, sync::Arc};

use tokio::{sync::mpsc, time::Instant};

use super::{dingtalk::Robot, AlertTuning, Msg};
use crate::metrics::Metrics;

/// The most text one summary carries (DingTalk accepts about 20 000 bytes).
const MAX_TEXT: usize = 15_000;
/// The most alerts waiting for a message.
const MAX_PENDING: usize = 1_000;

struct Line {
    title: &'static str,
    text: String,
    at: String,
}

pub struct Sender {
    robot: Robot,
    node: String,
    metrics: Arc<Metrics>,
    tuning: AlertTuning,
    pending: VecDeque<Line>,
    /// Alerts dropped since the last message because `pending` was full.
    omitted: u64,
    /// When each message of the current window was sent.
    sent_at: VecDeque<Instant>,
}

impl Sender {
    pub fn new(robot: Robot, node: &str, metrics: Arc<Metrics>, tuning: AlertTuning) -> Sender {
        Sender {
            robot,
            node: node.to_string(),
            metrics,
            tuning,
            pending: VecDeque::new(),
            omitted: 0,
            sent_at: VecDeque::new(),
        }
    }

    /// Runs until [`Msg::Stop`] (after sending what waits) or until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut stopping = false;
        loop {
            if self.pending.is_empty() {
                if stopping {
                    return;
                }
                match rx.recv().await {
                    Some(msg) => stopping = self.take(msg),
                    None => return,
                }
            }
            self.wait_for_room().await;
            while let Ok(msg) = rx.try_recv() {
                stopping |= self.take(msg);
            }
            if self.pending.is_empty() {
                continue;
            }
            let (title, text) = self.compose();
            self.sent_at.push_back(Instant::now());
            let result = self.robot.send(&title, &text).await;
            if let Err(why) = &result {
                tracing::warn!("DingTalk alert not delivered: {why}");
            }
            self.metrics.alert_message(result.is_ok());
        }
    }

    /// Queues an alert; true for [`Msg::Stop`].
    fn take(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Stop => true,
            Msg::Alert { .. } if self.pending.len() >= MAX_PENDING => {
                self.omitted += 1;
                self.metrics.alerts_dropped(1);
                false
            }
            Msg::Alert { title, text, at } => {
                self.pending.push_back(Line { title, text, at });
                false
            }
        }
    }

    /// Waits until sending one more message keeps within `per_window` per `window`.
    async fn wait_for_room(&mut self) {
        loop {
            while self
                .sent_at
                .front()
                .is_some_and(|at| at.elapsed() >= self.tuning.window)
            {
                self.sent_at.pop_front();
            }
            match self.sent_at.front() {
                Some(first) if self.sent_at.len() >= self.tuning.per_window => {
                    tokio::time::sleep_until(*first + self.tuning.window).await;
                }
                _ => return,
            }
        }
    }

    /// The next message's title and markdown text, taken from `pending`.
    fn compose(&mut self) -> (String, String) {
        let node = &self.node;
        if self.pending.len() == 1 && self.omitted == 0 {
            let line = self.pending.pop_front().expect("one is pending");
            let title = format!("minipush {node}: {}", line.title);
            let text = format!("#### {title}\n\n{}\n\n{}", line.text, line.at);
            return (title, text);
        }
        let mut lines = Vec::new();
        let mut size = 0;
        while let Some(line) = self.pending.front() {
            let item = format!("- {} **{}**: {}\n", line.at, line.title, line.text);
            if !lines.is_empty() && size + item.len() > MAX_TEXT {
                break;
            }
            size += item.len();
            lines.push(item);
            self.pending.pop_front();
        }
        let title = format!("minipush {node}: {} alerts", lines.len());
        let mut text = format!("#### {title}\n\n{}", lines.concat());
        if self.omitted > 0 {
            text += &format!(
                "\n_{} more alerts were dropped: see the node's log_\n",
                self.omitted
            );
            self.omitted = 0;
        }
        if !self.pending.is_empty() {
            text += &format!("\n_{} more follow_\n", self.pending.len());
        }
        (title, text)
    }
}
