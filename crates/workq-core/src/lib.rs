//! workq-core: the domain types and pure logic of workq, with no I/O.
//!
//! Everything here is deterministic and cheap to test: job and attempt types, the state names,
//! duration parsing, timestamps, and the retry/backoff decision that the stores apply on finish.

pub mod duration;
pub mod exit;
pub mod job;
pub mod lifecycle;
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

#[cfg(test)]
mod fuzz {
    //! Hostile input never panics: durations, templates, parameter files.
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn durations_parse_or_fail(s in "\\PC{0,40}") {
            if let Ok(d) = crate::parse_duration(&s) {
                let _ = crate::format_duration(d);
            }
        }

        #[test]
        fn duration_like_text_parses_or_fails(s in "[0-9]{0,20}(\\.[0-9]{0,5})?(ms|s|m|h|d|w|y|)[0-9a-z ]{0,6}") {
            let _ = crate::parse_duration(&s);
        }

        #[test]
        fn templates_parse_or_fail_and_values_stay_one_argument(
            template in "\\PC{0,80}",
            value in "\\PC{0,40}",
        ) {
            if let Ok(t) = crate::Template::parse(&template) {
                let values: BTreeMap<String, String> =
                    t.params().into_iter().map(|p| (p, value.clone())).collect();
                let argv = t.render(&values).expect("every parameter was given");
                let words = crate::template::split_words(&template).expect("it parsed");
                prop_assert_eq!(argv.len(), words.len());
            }
        }

        #[test]
        fn parameter_files_parse_or_fail(text in "\\PC{0,300}") {
            let _ = crate::params::parse_csv(&text);
            let _ = crate::params::parse_jsonl(&text);
        }

        #[test]
        fn csv_shaped_text_parses_or_fails(text in "([a-z\",\r\n ]|\"\"){0,200}") {
            if let Ok(t) = crate::params::parse_csv(&text) {
                for r in &t.rows {
                    prop_assert_eq!(r.values.len(), t.columns.len());
                }
            }
        }
    }
}
