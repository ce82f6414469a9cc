//! The one place YAML is parsed, so a maintained fork of `serde_yaml` can
//! replace it here alone.
//!
//! Config files are parsed in two stages (STYLE "Config and playbooks"):
//! [`parse`] deserialises into raw structs with `deny_unknown_fields`, and the
//! caller's `validate` turns those into checked types, reporting every problem
//! as a [`Diagnostic`]. Semantic problems are found by key path (e.g.
//! `apps[2].rules[0].for`), which the [`Locator`] maps back to a line and
//! column of the source, so every error names file:line:col.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser};
use serde::de::DeserializeOwned;

/// How serious a diagnostic is. Errors make a file invalid; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Warning,
    Error,
}

/// One problem in a config or playbook file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// Where in the document, e.g. `apps[0].rules[1].for`; empty for the root.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Warning => "warning",
            Level::Error => "error",
        };
        write!(
            f,
            "{}:{}:{}: {level}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if !self.key_path.is_empty() {
            write!(f, " (at {})", self.key_path)?;
        }
        Ok(())
    }
}

/// A list of diagnostics, displayed one per line. Used as an error type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.level == Level::Error)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A YAML file's text, its path and a locator over it.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    pub text: String,
    locator: Locator,
}

impl Document {
    /// Reads a file. An unreadable file is a diagnostic at 1:1.
    pub fn read(path: &Path) -> Result<Self, Diagnostics> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::from_text(path, text)),
            Err(e) => Err(Diagnostics(vec![Diagnostic {
                level: Level::Error,
                file: path.to_owned(),
                line: 1,
                column: 1,
                key_path: String::new(),
                message: format!("cannot read file: {e}"),
            }])),
        }
    }

    pub fn from_text(path: &Path, text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            locator: Locator::new(&text),
            file: path.to_owned(),
            text,
        }
    }

    /// Stage one: deserialise into raw structs. Syntax errors, unknown keys
    /// and wrong types come back with serde_yaml's own position.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Diagnostics> {
        serde_yaml::from_str(&self.text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let message = strip_location(&e.to_string());
            let (key_path, message) = split_key_path(&message);
            Diagnostics(vec![Diagnostic {
                level: Level::Error,
                file: self.file.clone(),
                line,
                column,
                key_path,
                message,
            }])
        })
    }

    /// A diagnostic at the value under `key_path` (or its nearest located
    /// ancestor when the key is absent).
    pub fn error(&self, key_path: &str, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Level::Error, key_path, message)
    }

    pub fn warning(&self, key_path: &str, message: impl Into<String>) -> Diagnostic {
        self.diagnostic(Level::Warning, key_path, message)
    }

    fn diagnostic(&self, level: Level, key_path: &str, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.locator.find(key_path);
        Diagnostic {
            level,
            file: self.file.clone(),
            line,
            column,
            key_path: key_path.to_owned(),
            message: message.into(),
        }
    }
}

/// serde_yaml appends " at line L column C"; we report the position separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

/// serde_yaml prefixes nested errors with "path.to[0].key: "; split it off.
fn split_key_path(message: &str) -> (String, String) {
    if let Some((head, rest)) = message.split_once(": ") {
        let looks_like_path = !head.is_empty()
            && !head.contains(' ')
            && head
                .chars()
                .all(|c| c.is_alphanumeric() || "._-[]".contains(c));
        if looks_like_path {
            return (head.to_owned(), rest.to_owned());
        }
    }
    (String::new(), message.to_owned())
}

/// Maps key paths such as `apps[0].probe.http.url` to 1-based (line, column)
/// of the value in the YAML text.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    positions: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        in_key: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
    /// A non-scalar mapping key: its contents are not addressable.
    ComplexKey {
        depth: usize,
    },
}

impl Locator {
    /// Builds the index. Text that fails to parse yields a partial index;
    /// serde_yaml reports the syntax error itself.
    pub fn new(text: &str) -> Self {
        let mut positions = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = (span.start.line(), span.start.col() + 1);
            if let Some(Frame::ComplexKey { depth }) = stack.last_mut() {
                match event {
                    Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                    Event::MappingEnd | Event::SequenceEnd => {
                        *depth -= 1;
                        if *depth == 0 {
                            stack.pop();
                            if let Some(Frame::Map { key, in_key, .. }) = stack.last_mut() {
                                *key = Some("?".into());
                                *in_key = false;
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let is_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(..)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
            );
            if is_node {
                // A mapping key?
                if let Some(Frame::Map { key, in_key, .. }) = stack.last_mut() {
                    if *in_key {
                        match &event {
                            Event::Scalar(value, ..) => {
                                *key = Some(value.to_string());
                                *in_key = false;
                            }
                            _ => stack.push(Frame::ComplexKey { depth: 1 }),
                        }
                        continue;
                    }
                }
                let path = match stack.last() {
                    None => String::new(),
                    Some(Frame::Map { path, key, .. }) => {
                        let key = key.as_deref().unwrap_or("?");
                        if path.is_empty() {
                            key.to_owned()
                        } else {
                            format!("{path}.{key}")
                        }
                    }
                    Some(Frame::Seq { path, index }) => format!("{path}[{index}]"),
                    Some(Frame::ComplexKey { .. }) => unreachable!("handled above"),
                };
                positions.entry(path.clone()).or_insert(pos);
                match event {
                    Event::MappingStart(..) => stack.push(Frame::Map {
                        path,
                        key: None,
                        in_key: true,
                    }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq { path, index: 0 }),
                    _ => Self::value_done(&mut stack),
                }
            } else if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
                Self::value_done(&mut stack);
            }
        }
        Self { positions }
    }

    fn value_done(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map { in_key, .. }) => *in_key = true,
            Some(Frame::Seq { index, .. }) => *index += 1,
            _ => {}
        }
    }

    /// The position of `key_path`, else of its nearest located ancestor, else 1:1.
    pub fn find(&self, key_path: &str) -> (usize, usize) {
        let mut path = key_path;
        loop {
            if let Some(pos) = self.positions.get(path) {
                return *pos;
            }
            match path.rfind(['.', '[']) {
                Some(i) => path = &path[..i],
                None => return self.positions.get("").copied().unwrap_or((1, 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const TEXT: &str = "\
version: 1
apps:
  - name: A
    rules:
      - when: cpu > 80
        for: 2s
  - name: B
    tags: [x, y]
";

    #[test]
    fn locator_finds_nested_values() {
        let loc = Locator::new(TEXT);
        assert_eq!(loc.find("version"), (1, 10));
        assert_eq!(loc.find("apps[0].name"), (3, 11));
        assert_eq!(loc.find("apps[0].rules[0].for"), (6, 14));
        assert_eq!(loc.find("apps[1].name"), (7, 11));
        assert_eq!(loc.find("apps[1].tags[1]"), (8, 15));
    }

    #[test]
    fn locator_falls_back_to_the_nearest_ancestor() {
        let loc = Locator::new(TEXT);
        assert_eq!(
            loc.find("apps[0].rules[0].severity"),
            loc.find("apps[0].rules[0]")
        );
        assert_eq!(loc.find("nothing.here"), (1, 1));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        version: u32,
        apps: Vec<RawApp>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct RawApp {
        name: String,
    }

    #[test]
    fn unknown_keys_name_file_line_column_and_key_path() {
        let doc = Document::from_text(
            Path::new("agent.yaml"),
            "version: 1\napps:\n  - name: A\n    colour: red\n",
        );
        let err = doc.parse::<Raw>().unwrap_err();
        let d = &err.0[0];
        assert_eq!((d.line, d.column), (4, 5), "{d}");
        assert_eq!(d.key_path, "apps[0]");
        assert!(d.message.starts_with("unknown field `colour`"), "{d}");
        assert!(
            err.to_string()
                .starts_with("agent.yaml:4:5: error: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn semantic_errors_point_at_the_value() {
        let doc = Document::from_text(Path::new("a.yaml"), TEXT);
        let d = doc.error("apps[0].rules[0].for", "bad duration");
        assert_eq!(
            d.to_string(),
            "a.yaml:6:14: error: bad duration (at apps[0].rules[0].for)"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let doc = Document::from_text(Path::new("a.yaml"), "version: 1\napps: [\n");
        let err = doc.parse::<Raw>().unwrap_err();
        assert!(err.0[0].line >= 2, "{err}");
    }
}
