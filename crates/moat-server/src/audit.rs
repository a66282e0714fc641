//! The audit log writer: handlers enqueue events, one background task commits them in batches.
//!
//! Batching keeps the token endpoint at no more than one database transaction per request
//! (events from many requests share one transaction). The queue is bounded and `record` waits
//! when it is full, so under overload issuance slows down rather than losing audit events; on
//! shutdown the writer drains the queue before exiting.

use std::time::Duration;

use moat_core::model::AuditEvent;
use moat_store::DynStore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const QUEUE: usize = 10_000;
const BATCH: usize = 512;

/// Cheap, cloneable handle for recording events.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
}

impl AuditSink {
    /// Starts the writer task. It ends (after flushing) once every `AuditSink` clone is dropped.
    pub fn start(store: DynStore) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = tokio::spawn(writer(store, rx));
        (Self { tx }, handle)
    }

    /// Queues an event.
    pub async fn record(&self, event: AuditEvent) {
        if self.tx.send(event).await.is_err() {
            tracing::error!("audit writer has stopped; event lost");
        }
    }
}

async fn writer(store: DynStore, mut rx: mpsc::Receiver<AuditEvent>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = rx.recv_many(&mut batch, BATCH).await;
        if n == 0 {
            break;
        }
        let mut attempt = 0;
        loop {
            match store.append_audit_events(&batch).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "writing audit events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, lost = batch.len(), "writing audit events failed; events lost");
                    break;
                }
            }
        }
        batch.clear();
    }
}
