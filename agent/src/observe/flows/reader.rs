//! The task that reads `EVENTS`: each event resolved, logged and stored.

use std::sync::{Arc, RwLock};

use palisade_common::event::FlowEvent;

use super::clock::Clock;
use super::directory::Directory;
use super::log::FlowLog;
use super::record::{FlowRecord, Verdict};
use crate::datapath::EventReader;

/// The flow side of observation: the directory and the log.
#[derive(Debug, Default)]
pub struct Flows {
    /// Address and endpoint resolution from the last plan.
    pub directory: RwLock<Directory>,
    /// Recent flows.
    pub log: FlowLog,
}

impl Flows {
    /// Records one kernel event: resolves, logs, stores. Returns the record.
    pub fn record(&self, event: &FlowEvent, now: Clock) -> Option<FlowRecord> {
        let record = match self.directory.read() {
            Ok(d) => d.resolve(event, now)?,
            Err(_) => return None,
        };
        let record = self.log.push(record);
        tracing::info!(
            target: "flows",
            verdict = record.verdict.as_str(),
            direction = record.direction.as_label(),
            source = %record.source,
            source_port = record.source_port,
            destination = %record.destination,
            destination_port = record.destination_port,
            protocol = %record.protocol,
            reason = %record.reason,
            policies = %record.policies.join(","),
            denied_by = %record.denied_by.as_ref().map(|b| b.text()).unwrap_or_default(),
            time = %record.time,
            "{} flow",
            if record.verdict == Verdict::Audit { "audited" } else { "denied" }
        );
        Some(record)
    }
}

/// Reads `EVENTS` until the ring buffer fails, calling `on_batch` (metrics)
/// with the flows recorded from each batch.
pub async fn read_events(
    mut events: EventReader,
    flows: Arc<Flows>,
    mut on_batch: impl FnMut(&[FlowRecord]) + Send,
) -> std::io::Result<()> {
    loop {
        let batch = events.next_batch().await?;
        let now = Clock::now();
        let records: Vec<FlowRecord> = batch.iter().filter_map(|e| flows.record(e, now)).collect();
        if !records.is_empty() {
            on_batch(&records);
        }
    }
}
