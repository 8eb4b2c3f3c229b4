//! The container a queue's jobs run in, from its config: `run` and `submit` attach it to the
//! jobs they submit, and `doctor` probes its engine (ARCHITECTURE.md §5.10).

use crate::context::Context;
use crate::error::CliError;

/// The queue's container settings when `mode = "container"`, with the runtime resolved.
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
    Ok(Some(workq_core::Container { runtime, image }))
}
