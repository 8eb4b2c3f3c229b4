//! The container a queue's jobs run in, from its config: `run` and `submit` attach it to the
//! jobs they submit, and `doctor` probes its engine (ARCHITECTURE.md §5.10).

use crate::context::Context;
use crate::error::CliError;

/// The queue's container settings when `mode = "container"`, with the runtime resolved, the
/// user (`container_user`, else the submitter's `uid:gid`) and the extra `container_args`.
pub fn container_for(
    ctx: &Context,
    queue: &str,
) -> Result<Option<workq_core::Container>, CliError> {
    if ctx.config.str(&format!("queues.{queue}.mode")).as_deref() != Some("container") {
        return Ok(None);
    }
    let image = ctx
        .config
        .str(&format!("queues.{queue}.image"))
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            CliError::usage(format!(
                "queue {queue} has mode = \"container\" but no image ({})",
                ctx.config.source(&format!("queues.{queue}.mode"))
            ))
            .with_hint(format!("add image = \"…\" under [queues.{queue}]"))
        })?;
    let key = ctx.config.queue_key(queue, "runtime");
    let key = if ctx.config.get(&key).is_some() {
        key
    } else {
        "container.runtime".to_string()
    };
    let wanted = ctx.config.str(&key).unwrap_or_else(|| "auto".into());
    let runtime = if wanted == "auto" {
        workq_runtime::container::detect().ok_or_else(|| {
            CliError::unavailable(format!(
                "queue {queue} runs in containers, but neither docker nor podman is on PATH"
            ))
            .with_hint(format!(
                "install docker or podman and put it on PATH, or run this queue's jobs directly (mode = \"direct\" under [queues.{queue}])"
            ))
        })?
    } else {
        if !workq_runtime::container::exists(&wanted) {
            return Err(CliError::unavailable(format!(
                "container runtime {wanted} ({key}, {}) is not on PATH",
                ctx.config.source(&key)
            ))
            .with_hint("install it, or set runtime = \"auto\" to use whichever of docker or podman is installed"));
        }
        wanted
    };
    let user = match ctx.config.str(&format!("queues.{queue}.container_user")) {
        // Empty: whatever user the image says (often root).
        Some(u) if u.trim().is_empty() => None,
        Some(u) => Some(u.trim().to_string()),
        None => Some(submitter()),
    };
    let args = ctx
        .config
        .str_list(&format!("queues.{queue}.container_args"))
        .unwrap_or_default();
    Ok(Some(workq_core::Container {
        runtime,
        image,
        user,
        args,
    }))
}

/// The `uid:gid` of whoever submits, so that files a job writes in the mounted directory are
/// theirs rather than root's, whichever user the worker that runs it is.
fn submitter() -> String {
    // SAFETY: both calls always succeed and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    format!("{uid}:{gid}")
}
