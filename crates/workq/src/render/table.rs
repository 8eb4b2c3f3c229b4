//! A minimal aligned table; the last column is cut to the terminal width.
//!
//! Kept hand-written on purpose (issue 12): comfy-table needs its `custom_styling` feature
//! (crossterm, ansi-str, nom, ...) to measure the pre-coloured cells commands pass in, which
//! made `workq list` on a terminal 2.7 ms slower (100 rows, +74% instructions) and the binary
//! 173 KiB larger, for the same output.

/// Rows under a header.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn visible_len(s: &str) -> usize {
    // Skip ANSI colour sequences when measuring.
    let mut n = 0;
    let mut in_esc = false;
    for c in s.chars() {
        if in_esc {
            if c == 'm' {
                in_esc = false;
            }
        } else if c == '\x1b' {
            in_esc = true;
        } else {
            n += 1;
        }
    }
    n
}

/// Columns available on standard output: `COLUMNS` first (it lets a user or a test pin the
/// width), then the terminal's own size, else 120.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .or_else(|| {
            terminal_size::terminal_size_of(std::io::stdout())
                .map(|(terminal_size::Width(w), _)| usize::from(w))
                .filter(|w| *w > 0)
        })
        .unwrap_or(120)
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// True if no rows were added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders: aligned with a header on a terminal, tab-separated without one otherwise.
    pub fn render(&self, tty: bool) -> String {
        let mut out = String::new();
        if !tty {
            for r in &self.rows {
                out.push_str(&r.join("\t"));
                out.push('\n');
            }
            return out;
        }
        self.render_aligned(terminal_width())
    }

    /// The terminal form, fitted to `budget` columns.
    fn render_aligned(&self, budget: usize) -> String {
        let mut out = String::new();
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(visible_len(c));
            }
        }
        let line = |cells: &[String], out: &mut String| {
            let mut used = 0;
            for (i, c) in cells.iter().enumerate() {
                let last = i + 1 == cells.len();
                if last {
                    let room = budget.saturating_sub(used).max(10);
                    if visible_len(c) > room && !c.contains('\x1b') {
                        let cut: String = c.chars().take(room.saturating_sub(1)).collect();
                        out.push_str(&cut);
                        out.push('…');
                    } else {
                        out.push_str(c);
                    }
                } else {
                    out.push_str(c);
                    let pad = widths[i].saturating_sub(visible_len(c)) + 2;
                    out.push_str(&" ".repeat(pad));
                    used += widths[i] + 2;
                }
            }
            while out.ends_with(' ') {
                out.pop();
            }
            out.push('\n');
        };
        line(&self.header, &mut out);
        for r in &self.rows {
            line(r, &mut out);
        }
        out
    }

    /// Prints to standard output.
    pub fn print(&self, tty: bool) {
        print!("{}", self.render(tty));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_tabs() {
        let mut t = Table::new(&["ID", "STATE"]);
        t.row(vec!["1".into(), "queued".into()]);
        t.row(vec!["100".into(), "\x1b[32mok\x1b[0m".into()]);
        assert_eq!(t.render(false), "1\tqueued\n100\t\x1b[32mok\x1b[0m\n");
        let r = t.render(true);
        assert!(r.starts_with("ID   STATE\n1    queued\n"), "{r}");
    }

    #[test]
    fn colour_does_not_count_and_only_the_last_column_is_cut() {
        let mut t = Table::new(&["ID", "STATE", "COMMAND"]);
        t.row(vec!["1".into(), "\x1b[32mok\x1b[0m".into(), "x".repeat(40)]);
        t.row(vec!["22".into(), "failed".into(), "echo hi".into()]);
        let r = t.render_aligned(30);
        assert_eq!(
            r,
            format!(
                "ID  STATE   COMMAND\n1   \x1b[32mok\x1b[0m      {}…\n22  failed  echo hi\n",
                "x".repeat(17)
            ),
            "{r}"
        );
        // Too narrow for the last column's 10: the table overflows rather than cut ids.
        assert!(t.render_aligned(5).lines().all(|l| l.chars().count() >= 14));
    }
}
