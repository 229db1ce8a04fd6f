//! Go's `flag` syntax on our command line: the Go reference is started as
//! `containerd-stargz-grpc -log-level=debug -config=/etc/...`, with single-dash long
//! names, which clap reads as bundles of short flags. [`normalize`] rewrites every
//! single-dash spelling of a long option the command knows (`-name`, `-name=value`) to
//! `--name`, leaving values, positionals and everything after `--` alone.

use std::ffi::OsString;

/// Rewrites `args` (program name first) for `command`.
pub fn normalize(
    command: &clap::Command,
    args: impl IntoIterator<Item = OsString>,
) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    out.extend(args.next()); // program name
    let mut value_next = false;
    while let Some(arg) = args.next() {
        if value_next {
            value_next = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(args.by_ref());
            break;
        }
        let Some(body) = text.strip_prefix("--").or_else(|| text.strip_prefix('-')) else {
            out.push(arg);
            continue;
        };
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        match takes_value(command, name) {
            None => out.push(arg),
            Some(true) => {
                value_next = value.is_none();
                out.push(OsString::from(format!("--{body}")));
            }
            // Go's bool flags accept `-version=true` and `-version=false`.
            Some(false) => match value {
                None | Some("true") | Some("1") => out.push(OsString::from(format!("--{name}"))),
                Some("false") | Some("0") => {}
                Some(_) => out.push(arg),
            },
        }
    }
    out
}

/// Whether the long option `name` of `command` (or of one of its subcommands) takes a
/// value; None when no such option exists.
fn takes_value(command: &clap::Command, name: &str) -> Option<bool> {
    if name == "help" || (name == "version" && command.get_version().is_some()) {
        return Some(false);
    }
    let own = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(name))
        .map(|arg| arg.get_action().takes_values());
    own.or_else(|| {
        command
            .get_subcommands()
            .find_map(|sub| takes_value(sub, name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn command() -> Command {
        Command::new("d")
            .version("1")
            .arg(Arg::new("config").long("config"))
            .arg(Arg::new("log-level").long("log-level"))
            .arg(Arg::new("root").long("root"))
            .subcommand(
                Command::new("status")
                    .arg(Arg::new("json").long("json").action(ArgAction::SetTrue)),
            )
    }

    #[test]
    fn rewrites() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("go equals", &["-log-level=debug"], &["--log-level=debug"]),
            (
                "go space",
                &["-log-level", "debug"],
                &["--log-level", "debug"],
            ),
            ("ours", &["--log-level=debug"], &["--log-level=debug"]),
            ("go bool", &["-version"], &["--version"]),
            ("go bool true", &["-version=true"], &["--version"]),
            ("go bool false", &["-version=false"], &[]),
            (
                "value that looks like a flag",
                &["-config", "-root"],
                &["--config", "-root"],
            ),
            (
                "subcommand flag",
                &["status", "-json"],
                &["status", "--json"],
            ),
            ("unknown left alone", &["-x", "-nope=1"], &["-x", "-nope=1"]),
            (
                "after double dash",
                &["--", "-root", "x"],
                &["--", "-root", "x"],
            ),
            (
                "the reference's unit",
                &["-log-level=debug", "-config=/etc/c.toml", "-root", "/r"],
                &["--log-level=debug", "--config=/etc/c.toml", "--root", "/r"],
            ),
        ];
        for (name, args, want) in cases {
            let args = std::iter::once("d")
                .chain(args.iter().copied())
                .map(OsString::from);
            let got = normalize(&command(), args);
            let want: Vec<OsString> = std::iter::once("d")
                .chain(want.iter().copied())
                .map(OsString::from)
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
