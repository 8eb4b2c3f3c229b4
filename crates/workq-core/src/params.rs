//! Parameter files for batch runs: CSV (a header row, RFC 4180 quoting) or JSON Lines (one
//! flat object per line). Each row becomes one job's parameters.

use std::collections::BTreeMap;

/// One row's parameters, with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line in the file.
    pub line: usize,
    /// Column name to value.
    pub values: BTreeMap<String, String>,
}

/// A parsed parameter file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// Column names (CSV header, or every key seen in JSONL), in file order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Row>,
}

/// Parses CSV text: the first row names the columns.
pub fn parse_csv(text: &str) -> Result<Table, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_quoting(text)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows of the wrong length get our message, which names the header's columns.
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let Some(header) = records.next() else {
        return Ok(Table::default());
    };
    let header = header.map_err(|e| csv_error(&e))?;
    let header_line = record_line(text, &header);
    let columns: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    for (i, c) in columns.iter().enumerate() {
        if c.is_empty() {
            return Err(format!(
                "line {header_line}: column {} of the header has no name",
                i + 1
            ));
        }
        if columns[..i].contains(c) {
            return Err(format!(
                "line {header_line}: column {c:?} appears twice in the header"
            ));
        }
    }
    let mut rows = Vec::new();
    for record in records {
        let record = record.map_err(|e| csv_error(&e))?;
        let line = record_line(text, &record);
        // The `csv` crate skips blank lines; a line of just `""` has always counted as one too.
        if record.len() == 1 && record.get(0) == Some("") {
            continue;
        }
        if record.len() != columns.len() {
            return Err(format!(
                "line {line}: {} field(s), but the header has {} ({})",
                record.len(),
                columns.len(),
                columns.join(", ")
            ));
        }
        rows.push(Row {
            line,
            values: columns
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_string))
                .collect(),
        });
    }
    Ok(Table { columns, rows })
}

/// The 1-based line `record` of `text` starts on. The `csv` crate places a record where the
/// previous one ended, before the line break and any blank lines that it skipped.
fn record_line(text: &str, record: &csv::StringRecord) -> usize {
    let Some(p) = record.position() else {
        return 0;
    };
    let skipped = usize::try_from(p.byte())
        .ok()
        .and_then(|b| text.get(b..))
        .map_or(0, |rest| {
            rest.bytes()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .filter(|b| *b == b'\n')
                .count()
        });
    usize::try_from(p.line()).map_or(usize::MAX, |l| l.saturating_add(skipped))
}

fn csv_error(e: &csv::Error) -> String {
    match e.position() {
        Some(p) => format!("line {}: {e}", p.line()),
        None => e.to_string(),
    }
}

/// Rejects the quoting mistakes RFC 4180 forbids: a quoted field that is never closed, and text
/// after a closing quote. The `csv` crate reads both leniently by design (it would take the rest
/// of the file as one field, or glue the text on), which hides a typo in a parameter file.
fn check_quoting(text: &str) -> Result<(), String> {
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                let open_line = line;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                        }
                        Some('"') => break,
                        Some('\n') => line += 1,
                        Some(_) => {}
                        None => {
                            return Err(format!("line {open_line}: a quoted field is never closed"))
                        }
                    }
                }
                match chars.peek() {
                    None | Some(',' | '\n' | '\r') => at_field_start = false,
                    Some(other) => {
                        return Err(format!(
                            "line {line}: {other:?} after a closing quote (double a quote inside quotes: \"\")"
                        ))
                    }
                }
            }
            // `\r` ends a record on its own too, as it does for the `csv` crate.
            ',' | '\r' => at_field_start = true,
            '\n' => {
                line += 1;
                at_field_start = true;
            }
            _ => at_field_start = false,
        }
    }
    Ok(())
}

/// Parses JSON Lines: each non-blank line one object whose values are strings, numbers,
/// booleans or null (null becomes an empty value).
pub fn parse_jsonl(text: &str) -> Result<Table, String> {
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|e| format!("line {line}: not valid JSON: {e}"))?;
        let serde_json::Value::Object(obj) = v else {
            return Err(format!(
                "line {line}: expected a JSON object like {{\"participant\": \"01\"}}"
            ));
        };
        let mut values = BTreeMap::new();
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => String::new(),
                _ => {
                    return Err(format!(
                        "line {line}: {k:?} holds a list or object; parameters must be strings, numbers or booleans"
                    ))
                }
            };
            if !columns.contains(&k) {
                columns.push(k.clone());
            }
            values.insert(k, s);
        }
        rows.push(Row { line, values });
    }
    Ok(Table { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quotes_empty_values_and_crlf() {
        let t = parse_csv("\u{feff}participant,session,note\r\n01,a,\"x, \"\"y\"\"\"\r\n02,,\"multi\nline\"\n\n03,b,plain\n").unwrap();
        assert_eq!(t.columns, vec!["participant", "session", "note"]);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0].values["note"], "x, \"y\"");
        assert_eq!(t.rows[1].values["session"], "");
        assert_eq!(t.rows[1].values["note"], "multi\nline");
        assert_eq!(
            (t.rows[2].line, t.rows[2].values["participant"].as_str()),
            (6, "03")
        );
        let t = parse_csv("a,b\n1,2").unwrap();
        assert_eq!(t.rows[0].values["b"], "2");
    }

    #[test]
    fn csv_rows_keep_their_own_line_past_crlf_blank_lines_and_quoted_breaks() {
        let lines = |text: &str| -> Vec<(usize, String)> {
            let t = parse_csv(text).unwrap();
            t.rows
                .iter()
                .map(|r| (r.line, r.values["a"].clone()))
                .collect()
        };
        assert_eq!(
            lines("a\r\n1\r\n\r\n2\r\n\"x\ny\"\r\n3"),
            [(2, "1"), (4, "2"), (5, "x\ny"), (7, "3")].map(|(l, v)| (l, v.to_string()))
        );
        assert_eq!(
            lines("\n\na\n1\n\n\n2\n"),
            [(4, "1"), (7, "2")].map(|(l, v)| (l, v.to_string()))
        );
        assert!(parse_csv("\n\na,a\n").unwrap_err().starts_with("line 3:"));
        assert!(parse_csv("a\n1\n\"x\n\ny\"z\n")
            .unwrap_err()
            .starts_with("line 5: 'z' after a closing quote"));
    }

    #[test]
    fn csv_errors_say_where() {
        assert!(parse_csv("a,b\n1,2,3\n")
            .unwrap_err()
            .contains("line 2: 3 field(s)"));
        assert!(parse_csv("a,b\n\"1,2\n")
            .unwrap_err()
            .contains("line 2: a quoted field is never closed"));
        assert!(parse_csv("a,,b\n").unwrap_err().contains("no name"));
        assert!(parse_csv("a,a\n").unwrap_err().contains("twice"));
        assert!(parse_csv("a\n\"x\"y\n")
            .unwrap_err()
            .contains("after a closing quote"));
        assert_eq!(parse_csv("").unwrap(), Table::default());
    }

    #[test]
    fn jsonl_rows() {
        let t = parse_jsonl(
            "{\"p\": \"01\", \"n\": 2, \"ok\": true}\n\n{\"p\": \"02\", \"x\": null}\n",
        )
        .unwrap();
        assert_eq!(t.columns, vec!["n", "ok", "p", "x"]);
        assert_eq!(t.rows[0].values["n"], "2");
        assert_eq!(t.rows[1].values["x"], "");
        assert_eq!(t.rows[1].line, 3);
        assert!(parse_jsonl("[1]\n")
            .unwrap_err()
            .contains("line 1: expected a JSON object"));
        assert!(parse_jsonl("{\"a\": [1]}")
            .unwrap_err()
            .contains("list or object"));
        assert!(parse_jsonl("{oops")
            .unwrap_err()
            .contains("line 1: not valid JSON"));
    }
}
