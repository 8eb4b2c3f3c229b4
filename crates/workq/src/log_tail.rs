//! Following a job's log across its attempts, for `logs -f` and `submit --wait`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
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

    /// A tail that goes on from byte `offset` of attempt `attempt`'s log (where
    /// [`last_lines_offset`] found its last lines), then follows later attempts.
    pub fn starting_at(log_dir: &Path, attempt: u32, offset: u64) -> Self {
        LogTail {
            log_dir: log_dir.to_path_buf(),
            attempt,
            offset,
        }
    }

    /// True once some of attempt `attempt`'s log has been printed.
    pub fn has_shown(&self, attempt: u32) -> bool {
        self.attempt == attempt && self.offset > 0
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

/// Where the last `lines` lines of `file` begin (0 if it has no more than that). The newline
/// that ends the last line starts no line of its own. Reads backwards, a block at a time, so a
/// long log costs only what is shown.
pub fn last_lines_offset(file: &mut File, lines: u64) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if lines == 0 {
        return Ok(len);
    }
    let mut wanted = lines;
    let mut pos = len;
    let mut buf = vec![0u8; 64 * 1024];
    while pos > 0 {
        let start = pos.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            let at = start + i as u64;
            if *b == b'\n' && at + 1 != len {
                wanted -= 1;
                if wanted == 0 {
                    return Ok(at + 1);
                }
            }
        }
        pos = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(text: &[u8], lines: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, text).unwrap();
        let mut f = File::open(&path).unwrap();
        let at = last_lines_offset(&mut f, lines).unwrap();
        text[at as usize..].to_vec()
    }

    #[test]
    fn the_last_lines_with_or_without_a_final_newline() {
        assert_eq!(last(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last(b"a\nb\nc\n", 1), b"c\n");
        assert_eq!(last(b"a\nb\nc", 1), b"c");
        assert_eq!(last(b"a\nb\nc\n", 3), b"a\nb\nc\n");
        assert_eq!(last(b"a\nb\nc\n", 10), b"a\nb\nc\n");
        assert_eq!(last(b"a\nb\nc\n", 0), b"");
        assert_eq!(last(b"", 3), b"");
        assert_eq!(last(b"\n\n\n", 2), b"\n\n");
    }

    #[test]
    fn the_last_lines_of_a_log_longer_than_a_block() {
        let text: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        assert_eq!(last(&text, 2), b"line 39998\nline 39999\n");
        assert_eq!(last(&text, 40_000), text);
    }
}
