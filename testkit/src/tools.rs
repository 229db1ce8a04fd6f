//! Runs external programs (ctr, ctr-remote, the workspace's own binaries) and captures output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors from running a program to completion.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("run {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}):\nstderr:\n{stderr}\nstdout:\n{stdout}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    },
}

/// What a successful program printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program ARGS` to completion; non-zero exit is an error carrying both outputs.
pub fn run_tool<I, S>(program: &Path, args: I) -> Result<ToolOutput, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    run_command(command)
}

/// Runs a prepared command to completion, like [`run_tool`].
pub fn run_command(mut command: Command) -> Result<ToolOutput, ToolError> {
    let output = command.output().map_err(|source| ToolError::Spawn {
        program: PathBuf::from(command.get_program()),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(ToolError::Failed {
            command: describe(&command),
            status: output.status,
            stdout,
            stderr,
        });
    }
    Ok(ToolOutput { stdout, stderr })
}

/// `program arg1 arg2 ...` for error messages.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_on_success() {
        let out = run_tool(Path::new("sh"), ["-c", "echo hi"]).unwrap();
        assert_eq!(out.stdout, "hi\n");
    }

    #[test]
    fn failure_carries_stderr_and_command() {
        let err = run_tool(Path::new("sh"), ["-c", "echo bad >&2; exit 2"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bad"), "{text}");
        assert!(text.contains("sh -c"), "{text}");
    }

    #[test]
    fn missing_program_is_spawn_error() {
        let err = run_tool(Path::new("/nonexistent/prog"), ["x"]).unwrap_err();
        assert!(matches!(err, ToolError::Spawn { .. }));
    }
}
