//! Command templates of typed queues: `"qsiprep {bids_dir} {out_dir} --label {participant}"`.
//!
//! A template string is split into argv words *before* substitution (whitespace separates,
//! single and double quotes group, backslash escapes), so a parameter value always becomes part
//! of exactly one argument: spaces, quotes, semicolons and `$(…)` in values stay literal.
//! `{name}` is a parameter; `{{` and `}}` are literal braces.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Param(String),
}

/// A parsed template: one entry per argv word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    words: Vec<Vec<Piece>>,
}

/// What is wrong with a template or its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The template itself is malformed.
    Syntax(String),
    /// Parameters the template needs were not given.
    Missing {
        /// The missing names.
        missing: Vec<String>,
        /// Every parameter the template uses.
        needed: Vec<String>,
    },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Syntax(m) => f.write_str(m),
            TemplateError::Missing { missing, needed } => write!(
                f,
                "missing parameter{} {}; the template needs {}",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                needed.join(", ")
            ),
        }
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
}

/// Splits one word's text into literal and parameter pieces.
fn pieces(word: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == '}' {
                        closed = true;
                        break;
                    }
                    name.push(d);
                }
                if !closed {
                    return Err(TemplateError::Syntax(format!(
                        "unclosed '{{' in {word:?} (write {{{{ for a literal brace)"
                    )));
                }
                let name = name.trim().to_string();
                if !valid_name(&name) {
                    return Err(TemplateError::Syntax(format!(
                        "{{{name}}} in {word:?} is not a parameter name (letters, digits, '_' and '-', not starting with a digit)"
                    )));
                }
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(Piece::Param(name));
            }
            '}' => {
                return Err(TemplateError::Syntax(format!(
                    "stray '}}' in {word:?} (write }}}} for a literal brace)"
                )))
            }
            other => lit.push(other),
        }
    }
    if !lit.is_empty() || out.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

/// Splits a command string into words like a POSIX shell would, without expanding anything.
pub fn split_words(s: &str) -> Result<Vec<String>, TemplateError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(d) => cur.push(d),
                        None => {
                            return Err(TemplateError::Syntax(format!(
                                "unclosed single quote in {s:?}"
                            )))
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(d @ ('"' | '\\')) => cur.push(d),
                            Some(d) => {
                                cur.push('\\');
                                cur.push(d);
                            }
                            None => break,
                        },
                        Some(d) => cur.push(d),
                        None => {
                            return Err(TemplateError::Syntax(format!(
                                "unclosed double quote in {s:?}"
                            )))
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(d) = chars.next() {
                    cur.push(d);
                }
            }
            other => {
                in_word = true;
                cur.push(other);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

impl Template {
    /// Parses a command string (split into words first).
    pub fn parse(command: &str) -> Result<Template, TemplateError> {
        let words = split_words(command)?;
        if words.is_empty() {
            return Err(TemplateError::Syntax("the command is empty".into()));
        }
        Template::from_argv(&words)
    }

    /// Parses an argv array; each element is one word.
    pub fn from_argv(argv: &[String]) -> Result<Template, TemplateError> {
        if argv.is_empty() {
            return Err(TemplateError::Syntax("the command is empty".into()));
        }
        Ok(Template {
            words: argv.iter().map(|w| pieces(w)).collect::<Result<_, _>>()?,
        })
    }

    /// Parses a single string that stays one value (a unique-key template).
    pub fn single(text: &str) -> Result<Template, TemplateError> {
        Ok(Template {
            words: vec![pieces(text)?],
        })
    }

    /// Every parameter used, sorted.
    pub fn params(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .words
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Piece::Param(n) => Some(n),
                Piece::Lit(_) => None,
            })
            .collect();
        set.into_iter().cloned().collect()
    }

    /// Fills in `values`; each word stays one argument whatever the values contain.
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<Vec<String>, TemplateError> {
        let missing: Vec<String> = self
            .params()
            .into_iter()
            .filter(|p| !values.contains_key(p))
            .collect();
        if !missing.is_empty() {
            return Err(TemplateError::Missing {
                missing,
                needed: self.params(),
            });
        }
        Ok(self
            .words
            .iter()
            .map(|w| {
                w.iter()
                    .map(|p| match p {
                        Piece::Lit(s) => s.as_str(),
                        Piece::Param(n) => values.get(n).map(String::as_str).unwrap_or(""),
                    })
                    .collect()
            })
            .collect())
    }

    /// Renders a single-word template to one string.
    pub fn render_one(&self, values: &BTreeMap<String, String>) -> Result<String, TemplateError> {
        Ok(self.render(values)?.concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hostile_values_stay_one_argument() {
        let t = Template::parse("run --sub {p} 'in dir/{p}' x{s}y").unwrap();
        assert_eq!(t.params(), vec!["p", "s"]);
        let evil = "01; rm -rf / $(reboot) \"' `x`";
        let argv = t.render(&vals(&[("p", evil), ("s", " ")])).unwrap();
        assert_eq!(
            argv,
            vec![
                "run".to_string(),
                "--sub".into(),
                evil.into(),
                format!("in dir/{evil}"),
                "x y".into()
            ]
        );
    }

    #[test]
    fn missing_parameters_are_listed() {
        let t = Template::parse("a {x} {y} {z}").unwrap();
        let e = t.render(&vals(&[("y", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing parameters x, z; the template needs x, y, z"
        );
    }

    #[test]
    fn braces_quotes_and_arrays() {
        let t = Template::parse(r#"echo "{{literal}}" a\ b "q\"x""#).unwrap();
        assert_eq!(
            t.render(&BTreeMap::new()).unwrap(),
            vec!["echo", "{literal}", "a b", "q\"x"]
        );
        for bad in ["echo {", "echo }", "echo {1x}", "echo 'open", "   "] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
        let t = Template::from_argv(&["prog".into(), "{a} {b}".into()]).unwrap();
        assert_eq!(
            t.render(&vals(&[("a", "1"), ("b", "2")])).unwrap(),
            vec!["prog", "1 2"]
        );
        let u = Template::single("{participant}/{session}").unwrap();
        assert_eq!(
            u.render_one(&vals(&[("participant", "01"), ("session", "a b")]))
                .unwrap(),
            "01/a b"
        );
    }
}
