//! The bounded in-memory flow log, with long polling.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::record::FlowRecord;

/// Flows kept in memory.
pub const BUFFER: usize = 4096;

/// The bounded in-memory log with a change signal for long polls.
#[derive(Debug)]
pub struct FlowLog {
    records: Mutex<VecDeque<FlowRecord>>,
    capacity: usize,
    /// Sequence number of the newest record (0: none yet).
    newest: watch::Sender<u64>,
}

impl Default for FlowLog {
    fn default() -> Self {
        FlowLog::new(BUFFER)
    }
}

/// What `/flows` answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowPage {
    /// Pass as `since` to get only newer flows.
    pub next: u64,
    /// Matching flows, oldest first.
    pub flows: Vec<FlowRecord>,
}

impl FlowLog {
    /// A log keeping the last `capacity` flows.
    pub fn new(capacity: usize) -> FlowLog {
        FlowLog {
            records: Mutex::new(VecDeque::with_capacity(capacity.min(BUFFER))),
            capacity,
            newest: watch::channel(0).0,
        }
    }

    /// Appends a record, numbering it; returns the numbered record.
    pub fn push(&self, mut record: FlowRecord) -> FlowRecord {
        let Ok(mut records) = self.records.lock() else {
            return record;
        };
        record.seq = records.back().map_or(*self.newest.borrow(), |r| r.seq) + 1;
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record.clone());
        self.newest.send_replace(record.seq);
        record
    }

    /// Flows after `since` matching the filter.
    pub fn since(&self, since: u64, namespace: Option<&str>, pod: Option<&str>) -> FlowPage {
        let Ok(records) = self.records.lock() else {
            return FlowPage::default();
        };
        FlowPage {
            next: records.back().map_or(since, |r| r.seq.max(since)),
            flows: records
                .iter()
                .filter(|r| r.seq > since && r.matches(namespace, pod))
                .cloned()
                .collect(),
        }
    }

    /// Like [`FlowLog::since`], but waits up to `wait` for a matching flow.
    pub async fn wait_since(
        &self,
        since: u64,
        namespace: Option<&str>,
        pod: Option<&str>,
        wait: Duration,
    ) -> FlowPage {
        let deadline = tokio::time::Instant::now() + wait;
        let mut newest = self.newest.subscribe();
        let mut from = since;
        let mut page = self.since(since, namespace, pod);
        loop {
            if !page.flows.is_empty() || tokio::time::Instant::now() >= deadline {
                page.next = page.next.max(from);
                return page;
            }
            from = page.next;
            match tokio::time::timeout_at(deadline, newest.wait_for(|n| *n > from)).await {
                Ok(Ok(_)) => {}
                _ => {
                    page.next = page.next.max(from);
                    return page;
                }
            }
            let next = self.since(from, namespace, pod);
            page = FlowPage {
                next: next.next,
                flows: next.flows,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use palisade_common::verdict::Direction;

    use super::*;
    use crate::observe::flows::record::Verdict;

    #[tokio::test]
    async fn the_log_is_bounded_numbered_and_long_polls() {
        let log = Arc::new(FlowLog::new(3));
        let rec = FlowRecord {
            seq: 0,
            time: "1970-01-01T00:00:00.000Z".into(),
            direction: Direction::Ingress,
            source: "10.0.0.1".into(),
            destination: "ns/server".into(),
            source_port: 4000,
            destination_port: 53,
            protocol: "UDP".into(),
            reason: "policy_denied".into(),
            endpoint: "ns/server".into(),
            policies: vec!["ns/deny".into()],
            denied_by: None,
            verdict: Verdict::Drop,
        };
        for _ in 0..5 {
            log.push(rec.clone());
        }
        let page = log.since(0, None, None);
        assert_eq!(
            page.flows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(page.next, 5);
        let empty = log
            .wait_since(5, None, None, Duration::from_millis(20))
            .await;
        assert!(empty.flows.is_empty());
        assert_eq!(empty.next, 5);
        let waiter = {
            let log = log.clone();
            tokio::spawn(async move {
                log.wait_since(5, Some("ns"), None, Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.push(rec);
        let page = waiter.await.expect("joins");
        assert_eq!(page.flows.len(), 1);
        assert_eq!(page.flows[0].seq, 6);
    }
}
