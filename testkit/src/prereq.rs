//! Skip rules: a test whose prerequisites are missing says why and returns, never silently.
//!
//! Under CI (`CI=true`) everything must be installed, so a missing prerequisite fails the
//! test instead of skipping it.

use std::io::Write as _;
use std::path::Path;

/// Something an integration test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prereq {
    /// Running as root (containerd, mounts).
    Root,
    /// An executable file at this path.
    Binary(&'static str),
    /// The FUSE device.
    DevFuse,
    /// A statically linked /bin/busybox (package busybox-static), copied into images.
    StaticBusybox,
}

impl Prereq {
    /// Why this prerequisite is not met, or `None` when it is.
    pub fn missing(&self) -> Option<String> {
        match self {
            Prereq::Root => {
                (!nix::unistd::geteuid().is_root()).then(|| "not running as root".into())
            }
            Prereq::Binary(path) => {
                (!Path::new(path).is_file()).then(|| format!("{path} is not installed"))
            }
            Prereq::DevFuse => {
                (!Path::new("/dev/fuse").exists()).then(|| "/dev/fuse is missing".into())
            }
            Prereq::StaticBusybox => crate::image::busybox::check_static_busybox().err(),
        }
    }
}

/// Everything a test with a registry, containerd, ctr and ctr-remote needs.
pub const CONTAINERD_STACK: &[Prereq] = &[
    Prereq::Root,
    Prereq::Binary(crate::registry::REGISTRY_BIN),
    Prereq::Binary(crate::containerd::CONTAINERD_BIN),
    Prereq::Binary(crate::containerd::CTR_BIN),
    Prereq::Binary(crate::containerd::CTR_REMOTE_BIN),
    Prereq::Binary("/usr/sbin/runc"),
    Prereq::StaticBusybox,
];

/// The reasons, joined, why `prereqs` are not all met; `None` when they are.
pub fn skip_reason(prereqs: &[Prereq]) -> Option<String> {
    let reasons: Vec<String> = prereqs.iter().filter_map(Prereq::missing).collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// True when the test should run. Otherwise prints the reason (past the test harness's
/// output capture) and returns false; under `CI=true` it panics instead.
pub fn should_run(prereqs: &[Prereq]) -> bool {
    let Some(reason) = skip_reason(prereqs) else {
        return true;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned();
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: prerequisite missing under CI: {reason}");
    }
    // Written to the real stderr: libtest only captures print!/eprint!.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
    false
}

/// What a skipped test returns: works for tests returning `()` or `Result<(), E>`.
pub trait SkipReturn {
    fn skipped() -> Self;
}

impl SkipReturn for () {
    fn skipped() -> Self {}
}

impl<E> SkipReturn for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// Returns from the calling test, with a printed reason, unless every prerequisite is met.
///
/// `testkit::require!(testkit::Prereq::Root, testkit::Prereq::DevFuse);`
/// or `testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);`
#[macro_export]
macro_rules! require {
    (stack: $list:expr) => {
        if !$crate::prereq::should_run($list) {
            return $crate::prereq::SkipReturn::skipped();
        }
    };
    ($($prereq:expr),+ $(,)?) => {
        if !$crate::prereq::should_run(&[$($prereq),+]) {
            return $crate::prereq::SkipReturn::skipped();
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_each_missing_thing() {
        let cases = [
            ("present", vec![Prereq::Binary("/bin/sh")], None),
            (
                "absent",
                vec![Prereq::Binary("/nonexistent/x")],
                Some("/nonexistent/x is not installed"),
            ),
        ];
        for (name, prereqs, want) in cases {
            assert_eq!(skip_reason(&prereqs).as_deref(), want, "{name}");
        }
    }
}
