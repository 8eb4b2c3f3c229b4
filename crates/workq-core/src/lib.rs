//! workq-core: the domain types and pure logic of workq, with no I/O.
//!
//! Everything here is deterministic and cheap to test: job and attempt types, the state names,
//! duration parsing, timestamps, and the retry/backoff decision that the stores apply on finish.

pub mod duration;
pub mod job;
pub mod params;
pub mod retry;
pub mod template;
pub mod time;
pub mod worker;

pub use duration::{format_duration, parse_duration, DurationError};
pub use job::{Attempt, ClaimedJob, Container, Job, JobId, JobSpec, JobState, Outcome, WorkerId};
pub use retry::{backoff_delay, next_after_failure, FailureDecision};
pub use template::{Template, TemplateError};
pub use time::Timestamp;
pub use worker::{WorkerRecord, WorkerState};
