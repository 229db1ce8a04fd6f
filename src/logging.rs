//! Installs the binary's log subscriber: a level (tracing directives, or the Go
//! reference's logrus level names) and text or JSON lines on stderr.

use crate::config::LogFormat;

/// A log level or filter that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("log level {level:?}: {source}")]
    Level {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Installs the global subscriber; call once, from a binary's main.
pub fn init(level: &str, format: LogFormat) -> Result<(), LoggingError> {
    let directive = directive(level);
    let filter = tracing_subscriber::EnvFilter::try_new(directive).map_err(|source| {
        LoggingError::Level {
            level: level.to_owned(),
            source,
        }
    })?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

/// logrus names tracing lacks: `warning`, and `fatal`/`panic` (errors only).
fn directive(level: &str) -> &str {
    match level {
        "warning" => "warn",
        "fatal" | "panic" => "error",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logrus_levels() {
        let cases = [
            ("warning", "warn"),
            ("fatal", "error"),
            ("panic", "error"),
            ("debug", "debug"),
            ("estargz_snapshotter=trace", "estargz_snapshotter=trace"),
        ];
        for (level, want) in cases {
            assert_eq!(directive(level), want, "{level}");
            assert!(tracing_subscriber::EnvFilter::try_new(directive(level)).is_ok());
        }
    }
}
