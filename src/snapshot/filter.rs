//! containerd's filter syntax for List/Walk: `fieldpath[op value]` selectors joined by
//! `,` (all must match); several filter strings match when any one does. Field paths
//! are `.`-separated fields, each bare (`[A-Za-z0-9_]+`) or a double-quoted string;
//! operators are `==`, `!=` and `~=` (regular expression; its value may also be quoted
//! with `/.../` or `|...|`). A selector without operator tests that the field exists.

use regex::Regex;

use super::Info;

/// Why a filter string could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{reason} at byte {position} of {input:?}")]
    Syntax {
        input: String,
        position: usize,
        reason: &'static str,
    },
    #[error("regular expression {pattern:?}: {source}")]
    Regex {
        pattern: String,
        source: Box<regex::Error>,
    },
}

/// A parsed set of filters: matches when any alternative matches.
#[derive(Debug)]
pub struct Filter {
    alternatives: Vec<Vec<Selector>>,
}

#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

#[derive(Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

impl Filter {
    /// Parses every filter string; no strings (or an empty one) matches everything.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter, ParseError> {
        let alternatives = filters
            .iter()
            .map(|f| Parser::new(f.as_ref()).selectors())
            .collect::<Result<_, _>>()?;
        Ok(Filter { alternatives })
    }

    /// Whether `info` passes the filter.
    pub fn matches(&self, info: &Info) -> bool {
        self.alternatives.is_empty()
            || self
                .alternatives
                .iter()
                .any(|all| all.iter().all(|s| s.matches(info)))
    }
}

impl Selector {
    fn matches(&self, info: &Info) -> bool {
        let value = field(info, &self.path);
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(want) => value.as_deref() == Some(want.as_str()),
            Op::NotEqual(want) => value.as_deref().unwrap_or("") != want,
            Op::Matches(re) => re.is_match(value.as_deref().unwrap_or("")),
        }
    }
}

/// The value of a field path of a snapshot, as containerd's snapshot adaptor sees it.
fn field(info: &Info, path: &[String]) -> Option<String> {
    match path.first()?.as_str() {
        "kind" => Some(info.kind.filter_name().to_owned()),
        "name" => Some(info.name.clone()),
        "parent" => Some(info.parent.clone()),
        "labels" => info.labels.get(&path[1..].join(".")).cloned(),
        _ => None,
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser { input, pos: 0 }
    }

    fn selectors(mut self) -> Result<Vec<Selector>, ParseError> {
        let mut all = Vec::new();
        if self.input.is_empty() {
            return Ok(all);
        }
        loop {
            all.push(self.selector()?);
            self.skip_space();
            match self.peek() {
                None => return Ok(all),
                Some(',') => self.pos += 1,
                Some(_) => return Err(self.error("expected `,` or end")),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let path = self.fieldpath()?;
        self.skip_space();
        if matches!(self.peek(), None | Some(',')) {
            return Ok(Selector {
                path,
                op: Op::Present,
            });
        }
        let op = self.operator()?;
        self.skip_space();
        let value = self.value(op == "~=")?;
        let op = match op {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => Op::Matches(Regex::new(&value).map_err(|source| ParseError::Regex {
                pattern: value,
                source: Box::new(source),
            })?),
        };
        Ok(Selector { path, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, ParseError> {
        let mut path = vec![self.field()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<String, ParseError> {
        self.skip_space();
        if self.peek() == Some('"') {
            return self.quoted('"');
        }
        let word = self.take_while(|c| c == '_' || c.is_ascii_alphanumeric());
        if word.is_empty() {
            return Err(self.error("expected field or quoted field"));
        }
        Ok(word.to_owned())
    }

    fn operator(&mut self) -> Result<&'static str, ParseError> {
        let rest = &self.input[self.pos..];
        let op = ["==", "!=", "~="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| self.error("expected an operator (`==`, `!=`, `~=`)"))?;
        self.pos += op.len();
        Ok(op)
    }

    fn value(&mut self, regex: bool) -> Result<String, ParseError> {
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(q @ ('/' | '|')) if regex => self.quoted(q),
            Some('/' | '|') => Err(self.error("this quote is only allowed after `~=`")),
            _ => {
                let word = self.take_while(|c| c != ',' && !c.is_whitespace());
                if word.is_empty() {
                    return Err(self.error("expected value or quoted value"));
                }
                Ok(word.to_owned())
            }
        }
    }

    /// Reads a string in `quote`s with Go-style backslash escapes.
    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        self.pos += quote.len_utf8();
        let mut out = String::new();
        loop {
            let c = self
                .next()
                .ok_or_else(|| self.error("unterminated quote"))?;
            match c {
                c if c == quote => return Ok(out),
                '\\' => out.push(self.escape(quote)?),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, quote: char) -> Result<char, ParseError> {
        let c = self
            .next()
            .ok_or_else(|| self.error("unterminated escape"))?;
        let simple = match c {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' => Some('\\'),
            c if c == quote => Some(c),
            _ => None,
        };
        if let Some(c) = simple {
            return Ok(c);
        }
        let digits = match c {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => return Err(self.error("unknown escape")),
        };
        let hex = self.input.get(self.pos..self.pos + digits);
        let code = hex.and_then(|h| u32::from_str_radix(h, 16).ok());
        let ch = code.and_then(char::from_u32);
        self.pos += digits;
        ch.ok_or_else(|| self.error("bad hex escape"))
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.next();
        }
        &self.input[start..self.pos]
    }

    fn skip_space(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn error(&self, reason: &'static str) -> ParseError {
        ParseError::Syntax {
            input: self.input.to_owned(),
            position: self.pos,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Kind;
    use std::time::SystemTime;

    fn info() -> Info {
        Info {
            name: "layer-2".into(),
            parent: "layer-1".into(),
            kind: Kind::Committed,
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
            labels: [
                (
                    "containerd.io/snapshot.ref".to_owned(),
                    "sha256:abc".to_owned(),
                ),
                ("l".to_owned(), "2".to_owned()),
            ]
            .into(),
        }
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("no filter", &[], true),
            ("empty filter", &[""], true),
            ("name", &["name==layer-2"], true),
            ("name differs", &["name==layer-3"], false),
            ("kind", &["kind==committed"], true),
            ("kind differs", &["kind==active"], false),
            (
                "quoted label and parent",
                &[r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent==layer-1"#],
                true,
            ),
            (
                "and fails on one",
                &[r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent==x"#],
                false,
            ),
            ("any of two", &["name==x", "labels.l==2"], true),
            ("presence", &["labels.l"], true),
            ("absence", &["labels.missing"], false),
            ("not equal", &["parent!=\"\""], true),
            ("not equal missing field", &["labels.missing!=x"], true),
            ("regex", &["name~=^layer-[0-9]$"], true),
            ("slash quoted regex", &["name~=/^layer-[3-9]$/"], false),
            ("spaces", &[" name == layer-2 , kind==committed "], true),
            ("unknown field", &["size==1"], false),
        ];
        for (name, filters, want) in cases {
            let filter = Filter::parse_all(filters).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(filter.matches(&info()), *want, "{name}");
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        for (name, bad) in [
            ("missing value", "name=="),
            ("bad operator", "name=x"),
            ("unterminated quote", "labels.\"x==1"),
            ("trailing comma", "name==x,"),
            ("slash quote without regex", "name==/x/"),
            ("bad regex", "name~=("),
            ("empty field", ".x==1"),
        ] {
            assert!(Filter::parse_all(&[bad]).is_err(), "{name}");
        }
    }
}
