//! The sweep: find dead workers on this host, kill what is left of their jobs, rescue the jobs.

use workq_core::WorkerId;
use workq_store::{Rescued, Store};

use crate::procinfo;

/// What one sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Dead workers found, with the reason.
    pub dead_workers: Vec<(WorkerId, String, String)>,
    /// Jobs rescued from them.
    pub rescued: Vec<Rescued>,
    /// Leftover processes killed.
    pub killed: usize,
}

/// Checks every live-registered worker on this host (except `skip`) and rescues the jobs of the
/// dead ones. Idempotent: any worker or command may run it at any time.
pub fn sweep(
    store: &dyn Store,
    skip: Option<WorkerId>,
) -> Result<SweepReport, workq_store::StoreError> {
    let host = procinfo::hostname();
    let boot = procinfo::boot_id();
    let mut report = SweepReport::default();
    let now = store.now();
    for w in store.workers(false)? {
        if Some(w.id) == skip {
            continue;
        }
        let Some(reason) = procinfo::worker_death(&w, &host, &boot, now) else {
            continue;
        };
        // Kill leftovers first, so a rescued job never runs beside a survivor of its old attempt.
        for a in store.running_attempts(w.id)? {
            report.killed += procinfo::kill_attempt_leftovers(procinfo::Marker {
                job: a.job_id,
                attempt: a.attempt,
                lease: a.lease,
            });
            remove_container(store, a.job_id, a.attempt);
        }
        let rescued = store.rescue_worker(w.id, &reason, workq_store::RescueKind::Lost)?;
        report.rescued.extend(rescued);
        report.dead_workers.push((w.id, w.name.clone(), reason));
    }
    Ok(report)
}

/// Removes the container of one attempt, if the job runs in one (its engine keeps it running
/// after the client process is killed).
pub fn remove_container(store: &dyn Store, job: workq_core::JobId, attempt: u32) {
    let Ok(Some(j)) = store.get(job) else { return };
    let Some(c) = &j.spec.container else { return };
    let Ok(store_id) = store.store_id() else {
        return;
    };
    let name = workq_core::Container::name(&store_id, job, attempt);
    crate::container::signal(&c.runtime, &name, crate::container::Action::Remove);
}
