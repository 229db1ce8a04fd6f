//! Parsing of `WWW-Authenticate` challenges (RFC 7235 syntax) into Basic and Bearer cases.

/// An authentication scheme a registry asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    /// The token flow: get a token from `realm` for `service` and our scopes.
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the registry suggests for the request that failed.
        scope: Option<String>,
    },
}

/// The supported challenges in one header value, in order. Unknown schemes and Bearer
/// challenges without a realm are skipped.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    parse_raw(header)
        .into_iter()
        .filter_map(|(scheme, params)| {
            let param = |name: &str| {
                params
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.clone())
            };
            if scheme.eq_ignore_ascii_case("basic") {
                Some(Challenge::Basic)
            } else if scheme.eq_ignore_ascii_case("bearer") {
                Some(Challenge::Bearer {
                    realm: param("realm").filter(|r| !r.is_empty())?,
                    service: param("service"),
                    scope: param("scope"),
                })
            } else {
                None
            }
        })
        .collect()
}

type RawChallenge = (String, Vec<(String, String)>);

/// Splits `Scheme k=v, k="v", Scheme2 k=v` into schemes with their parameters.
fn parse_raw(header: &str) -> Vec<RawChallenge> {
    let mut lexer = Lexer {
        rest: header.trim(),
    };
    let mut challenges: Vec<RawChallenge> = Vec::new();
    while !lexer.rest.is_empty() {
        lexer.skip(|c| c == ',' || c.is_ascii_whitespace());
        let word = lexer.token();
        if word.is_empty() {
            // Not a token: skip one character so malformed input cannot loop forever.
            lexer.advance_char();
            continue;
        }
        lexer.skip(|c| c.is_ascii_whitespace());
        if lexer.rest.starts_with('=') && !lexer.rest.starts_with("==") {
            lexer.advance_char();
            lexer.skip(|c| c.is_ascii_whitespace());
            let value = lexer.value();
            if let Some((_, params)) = challenges.last_mut() {
                params.push((word.to_owned(), value));
            }
        } else {
            challenges.push((word.to_owned(), Vec::new()));
        }
    }
    challenges
}

struct Lexer<'a> {
    rest: &'a str,
}

impl<'a> Lexer<'a> {
    fn skip(&mut self, what: impl Fn(char) -> bool) {
        self.rest = self.rest.trim_start_matches(what);
    }

    fn advance_char(&mut self) {
        let mut chars = self.rest.chars();
        chars.next();
        self.rest = chars.as_str();
    }

    /// An RFC 7230 token (also accepts token68 padding `=` runs after the first char).
    fn token(&mut self) -> &'a str {
        let end = self
            .rest
            .find(|c: char| !is_token_char(c))
            .unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        token
    }

    /// A quoted string with backslash escapes, or a bare token.
    fn value(&mut self) -> String {
        let Some(quoted) = self.rest.strip_prefix('"') else {
            let end = self
                .rest
                .find(|c: char| c == ',' || c.is_ascii_whitespace())
                .unwrap_or(self.rest.len());
            let (value, rest) = self.rest.split_at(end);
            self.rest = rest;
            return value.to_owned();
        };
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => {
                    self.rest = &quoted[i + 1..];
                    return value;
                }
                other => value.push(other),
            }
        }
        self.rest = "";
        value
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
            scope: scope.map(str::to_owned),
        }
    }

    #[test]
    fn challenge_table() {
        let cases = [
            (
                "docker hub",
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
                vec![bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/alpine:pull"),
                )],
            ),
            (
                "basic",
                r#"Basic realm="Registry Realm""#,
                vec![Challenge::Basic],
            ),
            ("basic lowercase no params", "basic", vec![Challenge::Basic]),
            (
                "spaces and unquoted",
                r#"bearer  realm = https://a/t , service=reg"#,
                vec![bearer("https://a/t", Some("reg"), None)],
            ),
            (
                "escaped quote and comma in scope",
                r#"Bearer realm="https://a/t",scope="repository:x:pull,push",service="s\"1""#,
                vec![bearer(
                    "https://a/t",
                    Some("s\"1"),
                    Some("repository:x:pull,push"),
                )],
            ),
            (
                "two challenges",
                r#"Basic realm="r", Bearer realm="https://t",service="s""#,
                vec![Challenge::Basic, bearer("https://t", Some("s"), None)],
            ),
            (
                "unknown scheme skipped",
                r#"Negotiate abc, Basic realm="r""#,
                vec![Challenge::Basic],
            ),
            (
                "bearer without realm skipped",
                r#"Bearer service="s""#,
                vec![],
            ),
            ("empty", "", vec![]),
            ("garbage", "\"=,,==", vec![]),
            (
                "unterminated quote",
                r#"Bearer realm="https://t"#,
                vec![bearer("https://t", None, None)],
            ),
        ];
        for (name, header, expected) in cases {
            assert_eq!(parse_challenges(header), expected, "{name}");
        }
    }
}
