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
    let records = csv_records(text)?;
    let mut it = records.into_iter();
    let Some((_, header)) = it.next() else {
        return Ok(Table::default());
    };
    let columns: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    for (i, c) in columns.iter().enumerate() {
        if c.is_empty() {
            return Err(format!(
                "line 1: column {} of the header has no name",
                i + 1
            ));
        }
        if columns[..i].contains(c) {
            return Err(format!("line 1: column {c:?} appears twice in the header"));
        }
    }
    let mut rows = Vec::new();
    for (line, fields) in it {
        if fields.len() == 1 && fields[0].is_empty() {
            continue; // a blank line
        }
        if fields.len() != columns.len() {
            return Err(format!(
                "line {line}: {} field(s), but the header has {} ({})",
                fields.len(),
                columns.len(),
                columns.join(", ")
            ));
        }
        rows.push(Row {
            line,
            values: columns.iter().cloned().zip(fields).collect(),
        });
    }
    Ok(Table { columns, rows })
}

/// Splits CSV text into records of fields, each with its starting line.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        match c {
            '"' if at_field_start => {
                let open_line = line;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            field.push(ch);
                        }
                        None => {
                            return Err(format!("line {open_line}: a quoted field is never closed"))
                        }
                    }
                }
                at_field_start = false;
                match chars.peek() {
                    None | Some(',') | Some('\n') | Some('\r') => {}
                    Some(other) => {
                        return Err(format!(
                            "line {line}: {other:?} after a closing quote (double a quote inside quotes: \"\")"
                        ))
                    }
                }
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                out.push((start, std::mem::take(&mut fields)));
                line += 1;
                start = line;
                at_field_start = true;
                any = false;
            }
            other => {
                field.push(other);
                at_field_start = false;
            }
        }
    }
    if any {
        fields.push(field);
        out.push((start, fields));
    }
    Ok(out)
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
