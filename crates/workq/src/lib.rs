//! workq: a durable background job queue with worker management.
//!
//! The `workq` binary is the usual way in; this library facade lets a Rust program use the same
//! queue directly. Jobs submitted here are picked up by any `workq worker` on the same state dir.
//!
//! ```no_run
//! use workq::{Client, JobSpec};
//!
//! # fn main() -> Result<(), workq::Error> {
//! let client = Client::open(".workq")?;
//! let id = client.submit(JobSpec::new("default", vec!["echo".into(), "hello".into()]))?.id();
//! let job = client.wait(&[id], Some(std::time::Duration::from_secs(60)))?;
//! println!("job {id} is {}", job[0].state);
//! # Ok(())
//! # }
//! ```

mod client;

pub use client::{Client, Error};
pub use workq_core::{Attempt, Job, JobId, JobSpec, JobState, Outcome, Timestamp, WorkerRecord};
pub use workq_store::{CancelOutcome, ListFilter, QueueStats, RetryOutcome, Submitted};
