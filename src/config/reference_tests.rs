//! The Go reference's config.toml read as ours: one named case per rule kind, the
//! reference's documented examples, and its full key set (tests/fixtures).

use std::path::Path;
use std::time::Duration;

use super::reference::RULES;
use super::*;

fn parse(text: &str) -> (Config, Vec<KeyNotice>) {
    Config::parse(text, Path::new("t.toml")).unwrap()
}

/// The notices as `key: kind` strings, without lines.
fn kinds(notices: &[KeyNotice]) -> Vec<String> {
    notices
        .iter()
        .map(|n| {
            let kind = match &n.kind {
                NoticeKind::Mapped { to } => format!("mapped {to}"),
                NoticeKind::NoEffect { .. } => "no effect".to_owned(),
                NoticeKind::Overridden { ours } => format!("overridden by {ours}"),
                NoticeKind::Unknown => "unknown".to_owned(),
            };
            format!("{}: {kind}", notice::render(&n.path))
        })
        .collect()
}

#[test]
fn rules() {
    type Change = fn(&mut Config);
    let cases: &[(&str, &str, Change, &[&str])] = &[
        (
            "same",
            "metrics_address = \"127.0.0.1:8234\"",
            |c| c.metrics.address = Some(([127, 0, 0, 1], 8234).into()),
            &["metrics_address: mapped metrics.address = \"127.0.0.1:8234\""],
        ),
        (
            "no_prometheus beats metrics_address",
            "metrics_address = \"127.0.0.1:8234\"\nno_prometheus = true",
            |_| {},
            &[
                "metrics_address: mapped metrics.address = \"127.0.0.1:8234\"",
                "no_prometheus: mapped metrics.address = \"\" (no metrics endpoint)",
            ],
        ),
        ("no_prometheus false", "no_prometheus = false", |_| {}, &[]),
        (
            "negated",
            "noprefetch = true\nno_background_fetch = true",
            |c| {
                c.prefetch.enable = false;
                c.background_fetch.enable = false;
            },
            &[
                "noprefetch: mapped prefetch.enable = false",
                "no_background_fetch: mapped background_fetch.enable = false",
            ],
        ),
        (
            "positive seconds",
            "prefetch_timeout_sec = 3\n[blob]\nfetching_timeout_sec = 7\nmax_retries = 9",
            |c| {
                c.prefetch.timeout = Duration::from_secs(3);
                c.layer.read_timeout = Duration::from_secs(7);
                c.remote.retries = 9;
            },
            &[
                "prefetch_timeout_sec: mapped prefetch.timeout = 3",
                "blob.fetching_timeout_sec: mapped layer.read_timeout = 7",
                "blob.max_retries: mapped remote.retries = 9",
            ],
        ),
        (
            "milliseconds",
            "[blob]\nmin_wait_msec = 30\nmax_wait_msec = 300000",
            |c| {
                c.remote.min_wait = Duration::from_millis(30);
                c.remote.max_wait = Duration::from_secs(300);
            },
            &[
                "blob.min_wait_msec: mapped remote.min_wait = 0.03",
                "blob.max_wait_msec: mapped remote.max_wait = 300.0",
            ],
        ),
        (
            "single range",
            "[blob]\nforce_single_range_mode = true",
            |c| c.remote.multi_range = false,
            &["blob.force_single_range_mode: mapped remote.multi_range = false"],
        ),
        (
            "zero is the reference's default",
            "prefetch_timeout_sec = 0\n[resolver]\nrequest_timeout_sec = 0",
            |_| {},
            &[],
        ),
        (
            "ours wins",
            "noprefetch = true\n[prefetch]\nenable = true",
            |_| {},
            &["noprefetch: overridden by prefetch.enable"],
        ),
        (
            "ignored",
            "ipfs = true\n[directory_cache]\ndirect = true",
            |_| {},
            &["ipfs: no effect", "directory_cache.direct: no effect"],
        ),
        (
            "verification",
            "allow_no_verification = true",
            |c| c.layer.verify = false,
            &["allow_no_verification: mapped layer.verify = false"],
        ),
        (
            "disable_verification keeps chunk digests",
            "disable_verification = true",
            |c| c.layer.verify = false,
            &["disable_verification: mapped layer.verify = false; chunk digests are still checked"],
        ),
        (
            "keychains",
            "[kubeconfig_keychain]\nenable_keychain = true\nkubeconfig_path = \"/k\"\n\
             [cri_keychain]\nenable_keychain = true\nlisten_path = \"/l.sock\"",
            |c| {
                c.kubeconfig_keychain.enable = true;
                c.kubeconfig_keychain.kubeconfig_path = "/k".into();
                c.cri_keychain.enable = true;
                c.cri_keychain.listen_path = "/l.sock".into();
            },
            &[
                "kubeconfig_keychain.enable_keychain: mapped kubeconfig_keychain.enable = true",
                "cri_keychain.enable_keychain: mapped cri_keychain.enable = true",
            ],
        ),
        (
            "cri keychain on the reference's default socket",
            "[cri_keychain]\nenable_keychain = true",
            |c| c.cri_keychain.enable = true,
            &[
                "cri_keychain.enable_keychain: mapped cri_keychain.enable = true",
                "cri_keychain.enable_keychain: no effect",
            ],
        ),
        (
            "fuse manager and our fuse keys side by side",
            "[fuse_manager]\nenable = true\n[fuse]\nattr_timeout = 1\npassthrough = false",
            |c| {
                c.fuse.manager = true;
                c.fuse.passthrough = false;
            },
            &["fuse.attr_timeout: no effect", "fuse_manager.enable: mapped fuse.manager = true"],
        ),
        (
            // docs/overview.md "Registry mirrors and insecure connection".
            "documented mirrors",
            "[[resolver.host.\"exampleregistry.io\".mirrors]]\nhost = \"mirrorhost.io\"\n\
             insecure = true\nrequest_timeout_sec = 60\n\
             [[resolver.host.\"exampleregistry.io\".mirrors]]\nhost = \"exampleregistry.io\"\n\
             insecure = true\n",
            |c| {
                c.remote.mirrors.insert(
                    "exampleregistry.io".to_owned(),
                    vec!["mirrorhost.io".to_owned()],
                );
                c.remote.plain_http = vec!["mirrorhost.io".to_owned(), "exampleregistry.io".to_owned()];
            },
            &[
                "resolver.host.\"exampleregistry.io\".mirrors[0].host: mapped remote.mirrors.\"exampleregistry.io\" += \"mirrorhost.io\"",
                "resolver.host.\"exampleregistry.io\".mirrors[0].insecure: mapped remote.plain_http += \"mirrorhost.io\"",
                "resolver.host.\"exampleregistry.io\".mirrors[0].request_timeout_sec: no effect",
                "resolver.host.\"exampleregistry.io\".mirrors[1].insecure: mapped remote.plain_http += \"exampleregistry.io\"",
            ],
        ),
        (
            // docs/overview.md: headers, and the global request timeout.
            "documented header and timeout",
            "[[resolver.host.\"registry2:5000\".mirrors]]\n  host = \"registry2:5000\"\n  \
             [resolver.host.\"registry2:5000\".mirrors.header]\n    x-custom-2 = [\"value3\", \"value4\"]\n\
             [resolver]\nrequest_timeout_sec = 300\n",
            |c| c.remote.timeout = Duration::from_secs(300),
            &[
                "resolver.host.\"registry2:5000\".mirrors[0].header: no effect",
                "resolver.request_timeout_sec: mapped remote.timeout = 300",
            ],
        ),
        (
            "unknown keys in reference tables",
            "[blob]\nchunk_sise = 1\n[[resolver.host.\"r\".mirrors]]\nhost = \"m\"\nhots = 1",
            |c| {
                c.remote.mirrors.insert("r".to_owned(), vec!["m".to_owned()]);
            },
            &[
                "blob.chunk_sise: unknown",
                "resolver.host.r.mirrors[0].host: mapped remote.mirrors.r += \"m\"",
                "resolver.host.r.mirrors[0].hots: unknown",
            ],
        ),
    ];
    for (name, text, change, want) in cases {
        let (config, notices) = parse(text);
        let mut expected = Config::default();
        change(&mut expected);
        assert_eq!(config, expected, "{name}");
        let mut got = kinds(&notices);
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn wrong_types_are_errors_naming_the_key() {
    let cases = [
        ("noprefetch = \"yes\"", "noprefetch"),
        ("[blob]\nmax_retries = \"5\"", "blob.max_retries"),
        (
            "[[resolver.host.\"r\".mirrors]]\ninsecure = true",
            "resolver.host.r.mirrors[0].host",
        ),
    ];
    for (text, key) in cases {
        let error = Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(key), "{text}: {error}");
    }
}

/// The fixture with every key the reference reads, as the integration test uses it.
pub(crate) fn full_reference_example(metrics: &str, registry: &str, mirror: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-config.toml");
    std::fs::read_to_string(path)
        .unwrap()
        .replace("@METRICS@", metrics)
        .replace("@REGISTRY@", registry)
        .replace("@MIRROR@", mirror)
}

#[test]
fn full_reference_example_starts_with_a_notice_per_key_and_none_unknown() {
    let text = full_reference_example("127.0.0.1:8234", "ref.test:5000", "127.0.0.1:5000");
    let (config, notices) = parse(&text);
    assert!(
        notices.iter().all(|n| n.kind != NoticeKind::Unknown),
        "{:#?}",
        notices
    );
    assert!(notices.iter().all(|n| n.line.is_some()), "{notices:#?}");
    // Every rule's key is in the file, so every rule speaks (false switches excepted:
    // they change nothing).
    let silent_by_value = ["no_prometheus", "disable_verification"];
    for (path, _) in RULES {
        let rendered = path.join(".");
        let spoke = notices
            .iter()
            .any(|n| notice::render(&n.path).starts_with(&rendered));
        assert!(
            spoke || silent_by_value.contains(&rendered.as_str()),
            "no notice for {rendered}"
        );
        assert!(
            text.contains(path.last().unwrap()),
            "{rendered} missing from the fixture"
        );
    }
    assert_eq!(config.metrics.address, Some(([127, 0, 0, 1], 8234).into()));
    assert_eq!(config.prefetch.timeout, Duration::from_secs(20));
    assert!(config.prefetch.enable && config.background_fetch.enable && config.layer.verify);
    assert_eq!(config.layer.read_timeout, Duration::from_secs(300));
    assert_eq!(config.remote.retries, 5);
    assert_eq!(config.remote.timeout, Duration::from_secs(60));
    assert_eq!(config.remote.plain_http, ["127.0.0.1:5000"]);
    assert_eq!(config.remote.mirrors["ref.test:5000"], ["127.0.0.1:5000"]);
    assert!(!config.fuse.passthrough && !config.fuse.manager);
    assert_eq!(
        config.kubeconfig_keychain.kubeconfig_path,
        Path::new("/etc/kubernetes/snapshotter/config.conf")
    );
}

#[test]
fn docs_list_every_reference_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let docs = std::fs::read_to_string(path).unwrap();
    for (path, _) in RULES {
        let key = match path {
            [table, key] => format!("`[{table}] {key}`"),
            _ => format!("`{}`", path.join(".")),
        };
        assert!(docs.contains(&key), "docs/configuration.md lacks {key}");
    }
}
