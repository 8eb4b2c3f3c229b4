//! Following a job's log across its attempts, for `logs -f` and `submit --wait`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use workq_core::Job;

/// Follows one job's log across attempts, printing new bytes as they arrive.
pub struct LogTail {
    log_dir: PathBuf,
    attempt: u32,
    offset: u64,
}

impl LogTail {
    /// A tail starting at attempt `from_attempt` (0 = the first one that starts).
    pub fn new(log_dir: &Path, from_attempt: u32) -> Self {
        LogTail {
            log_dir: log_dir.to_path_buf(),
            attempt: from_attempt,
            offset: 0,
        }
    }

    /// Prints whatever the job's current attempt wrote since the last call.
    pub fn pump(&mut self, job: &Job, out: &mut dyn Write, announce: bool) {
        if job.attempt == 0 {
            return;
        }
        if job.attempt != self.attempt {
            if self.attempt != 0 {
                self.drain_current(job.id, out);
                if announce {
                    eprintln!("workq: --- job {} attempt {} ---", job.id, job.attempt);
                }
            }
            self.attempt = job.attempt;
            self.offset = 0;
        }
        self.drain_current(job.id, out);
    }

    fn drain_current(&mut self, job: i64, out: &mut dyn Write) {
        let path = workq_runtime::spawn::log_path(&self.log_dir, job, self.attempt);
        let Ok(mut f) = File::open(&path) else { return };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.offset += n as u64;
                    if out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = out.flush();
    }
}
