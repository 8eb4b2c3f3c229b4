//! workq: a durable background job queue with worker management.
//!
//! The `workq` binary is the usual way in; this library facade lets a Rust program use the same
//! queue directly. Jobs submitted here are picked up by any `workq worker` on the same state dir.
//!
//! ```
//! use workq::{Client, JobSpec, JobState};
//!
//! # fn main() -> Result<(), workq::Error> {
//! # let tmp = std::env::temp_dir().join(format!("workq-doc-{}", std::process::id()));
//! # let state_dir = tmp.join(".workq");
//! // In a project this is usually ".workq"; the directory and database are created if needed.
//! let client = Client::open(&state_dir)?;
//! let id = client.submit(JobSpec::new("default", vec!["echo".into(), "hello".into()]))?.id();
//! assert_eq!(client.get(id)?.state, JobState::Queued);
//! // Any `workq worker start` on this state dir runs it; this blocks until it has finished:
//! // let done = client.wait(&[id], Some(std::time::Duration::from_secs(60)))?;
//! # std::fs::remove_dir_all(&tmp).ok();
//! # Ok(())
//! # }
//! ```

mod client;

pub use client::{Client, Error};
pub use workq_core::{Attempt, Job, JobId, JobSpec, JobState, Outcome, Timestamp, WorkerRecord};
pub use workq_store::{CancelOutcome, ListFilter, QueueStats, RetryOutcome, Submitted};
