//! The config.toml keys of the Go reference daemon (containerd-stargz-grpc): one table
//! says, for every key it reads, which of our keys carries the same meaning or why the key
//! has no effect here. [`translate`] rewrites a parsed file accordingly, before it is read
//! as our [`Config`](super::Config): a node's existing file starts this daemon unchanged.
//!
//! The reference treats a numeric 0 as "its default"; such values are left out rather
//! than copied. Where a file sets both a reference key and the matching key of ours, ours
//! wins.

use toml::{Table, Value};

use super::notice::{render, KeyNotice, NoticeKind, Segment};

/// A reference key whose value has the wrong type for the key of ours it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("config key {key}: expected {expected}")]
    WrongType { key: String, expected: &'static str },
}

/// What the daemon does with one reference key.
#[derive(Clone, Copy)]
pub(crate) enum Effect {
    /// Read as our key at this path, value as is.
    Same(&'static [&'static str]),
    /// Read as our key at this path when above 0 (0 is the reference's default).
    Positive(&'static [&'static str]),
    /// Milliseconds read as our seconds at this path when above 0.
    Millis(&'static [&'static str]),
    /// Read as our boolean at this path, negated (`noprefetch` -> `prefetch.enable`).
    Negated(&'static [&'static str]),
    /// Accepted; no effect here, for this reason.
    Ignored(&'static str),
    /// Handled by a function of this module.
    Custom(Custom),
}

/// The keys that take more than copying a value.
#[derive(Clone, Copy)]
pub(crate) enum Custom {
    /// `no_prometheus`: true turns the metrics endpoint off.
    NoPrometheus,
    /// `disable_verification`: TOC verification off; chunk digests stay checked.
    DisableVerification,
    /// `[cri_keychain] enable_keychain`, plus where the proxy listens.
    CriKeychain,
    /// `[resolver.host."HOST"] mirrors`: our mirrors and plain-HTTP hosts.
    ResolverHosts,
}

/// Why a cache-tuning key of `[directory_cache]` has no effect.
const PAGE_CACHE: &str = "the disk cache is read through the page cache and its files are \
                          not held open; [cache] memory_bytes and max_disk_bytes bound it";
/// Why the registry check keys of `[blob]` have no effect.
const CHECK: &str = "a layer's registry access is checked again when a read fails, not on an \
                     interval";
/// Why a fetch-size key of `[blob]` has no effect.
const FETCH_SIZES: &str = "request sizes adapt to the reads and the link (a readahead window \
                           bounded by [layer] readahead_min_bytes and readahead_max_bytes)";

/// Every key the reference reads (cmd/containerd-stargz-grpc/main.go, fs/config,
/// service/config.go, service/resolver), in the order they are applied.
pub(crate) const RULES: &[(&[&str], Effect)] = &[
    (&["metrics_address"], Effect::Same(&["metrics", "address"])),
    (&["no_prometheus"], Effect::Custom(Custom::NoPrometheus)),
    (
        &["debug_address"],
        Effect::Ignored("there is no Go pprof endpoint; `estargz-snapshotter status` and [metrics] report the daemon's state"),
    ),
    (&["ipfs"], Effect::Ignored("layers stored on IPFS are not supported")),
    (
        &["metadata_store"],
        Effect::Ignored("layer metadata is always indexed in memory from the TOC"),
    ),
    (
        &["http_cache_type"],
        Effect::Ignored("there is one chunk cache, in memory and on disk ([cache])"),
    ),
    (
        &["filesystem_cache_type"],
        Effect::Ignored("there is one chunk cache, in memory and on disk ([cache])"),
    ),
    (
        &["resolve_result_entry_ttl_sec"],
        Effect::Ignored("an opened layer is shared by blob digest while a snapshot uses it"),
    ),
    (
        &["resolve_result_entry"],
        Effect::Ignored("deprecated in the reference"),
    ),
    (
        &["prefetch_size"],
        Effect::Ignored("without a landmark only the stargz.prefetch label sets a prefetch size"),
    ),
    (
        &["prefetch_timeout_sec"],
        Effect::Positive(&["prefetch", "timeout"]),
    ),
    (
        &["prefetch_async_size"],
        Effect::Ignored("the rest of each layer is fetched by [background_fetch]"),
    ),
    (&["noprefetch"], Effect::Negated(&["prefetch", "enable"])),
    (
        &["no_background_fetch"],
        Effect::Negated(&["background_fetch", "enable"]),
    ),
    (
        &["debug"],
        Effect::Ignored("FUSE debug output: use --log-level trace"),
    ),
    (&["allow_no_verification"], Effect::Negated(&["layer", "verify"])),
    (
        &["disable_verification"],
        Effect::Custom(Custom::DisableVerification),
    ),
    (
        &["max_concurrency"],
        Effect::Ignored("background fetching is paced by [background_fetch] bytes_per_second"),
    ),
    (
        &["log_file_access"],
        Effect::Ignored("per-file access logs are not written; [record] records the files images open"),
    ),
    (&["blob", "valid_interval"], Effect::Ignored(CHECK)),
    (&["blob", "check_always"], Effect::Ignored(CHECK)),
    (&["blob", "chunk_size"], Effect::Ignored(FETCH_SIZES)),
    (
        &["blob", "fetching_timeout_sec"],
        Effect::Positive(&["layer", "read_timeout"]),
    ),
    (
        &["blob", "force_single_range_mode"],
        Effect::Negated(&["remote", "multi_range"]),
    ),
    (&["blob", "prefetch_chunk_size"], Effect::Ignored(FETCH_SIZES)),
    (&["blob", "max_retries"], Effect::Positive(&["remote", "retries"])),
    (
        &["blob", "min_wait_msec"],
        Effect::Millis(&["remote", "min_wait"]),
    ),
    (
        &["blob", "max_wait_msec"],
        Effect::Millis(&["remote", "max_wait"]),
    ),
    (&["directory_cache", "max_lru_cache_entry"], Effect::Ignored(PAGE_CACHE)),
    (&["directory_cache", "max_cache_fds"], Effect::Ignored(PAGE_CACHE)),
    (
        &["directory_cache", "sync_add"],
        Effect::Ignored("disk cache writes never hold up a read"),
    ),
    (&["directory_cache", "direct"], Effect::Ignored(PAGE_CACHE)),
    (&["directory_cache", "fadv_dontneed"], Effect::Ignored(PAGE_CACHE)),
    (
        &["fuse", "attr_timeout"],
        Effect::Ignored("a layer's files never change: the kernel keeps attributes for an hour"),
    ),
    (
        &["fuse", "entry_timeout"],
        Effect::Ignored("a layer's files never change: the kernel keeps entries for an hour"),
    ),
    (
        &["fuse", "merge_buffer_size"],
        Effect::Ignored("passthrough files are assembled from verified cached chunks"),
    ),
    (
        &["fuse", "merge_worker_count"],
        Effect::Ignored("passthrough files are assembled from verified cached chunks"),
    ),
    (&["fuse_manager", "enable"], Effect::Same(&["fuse", "manager"])),
    (
        &["fuse_manager", "address"],
        Effect::Ignored("the fuse manager listens on <root>/fuse-manager.sock"),
    ),
    (
        &["fuse_manager", "path"],
        Effect::Ignored("the fuse manager is this binary's `fuse-manager` subcommand"),
    ),
    (
        &["fuse_manager", "metrics_address"],
        Effect::Ignored("lazy-pull metrics are served on [metrics] address"),
    ),
    (
        &["kubeconfig_keychain", "enable_keychain"],
        Effect::Same(&["kubeconfig_keychain", "enable"]),
    ),
    (
        &["cri_keychain", "enable_keychain"],
        Effect::Custom(Custom::CriKeychain),
    ),
    (
        &["snapshotter", "allow_invalid_mounts_on_restart"],
        Effect::Ignored("startup never fails on a snapshot that cannot be mounted again: it is retried every 30 s"),
    ),
    (
        &["resolver", "request_timeout_sec"],
        Effect::Positive(&["remote", "timeout"]),
    ),
    (&["resolver", "host"], Effect::Custom(Custom::ResolverHosts)),
];

/// Tables only the reference has: what is left in them after the rules is unknown.
const REFERENCE_TABLES: &[&str] = &[
    "blob",
    "directory_cache",
    "fuse_manager",
    "snapshotter",
    "resolver",
];

/// Rewrites the reference's keys in `table` into ours (or drops them); returns a notice
/// per key found.
pub fn translate(table: &mut Table) -> Result<Vec<KeyNotice>, ReferenceError> {
    let mut notices = Vec::new();
    for (path, effect) in RULES {
        let Some(value) = take(table, path) else {
            continue;
        };
        let path: Vec<Segment> = path.iter().map(|k| Segment::Key(k.to_string())).collect();
        apply(table, &path, value, *effect, &mut notices)?;
    }
    // What is left in the reference's own tables nobody knows; named key by key here
    // (our deserializer would only name the table).
    for name in REFERENCE_TABLES {
        let Some(Value::Table(left)) = table.get(*name) else {
            continue;
        };
        for other in left.keys() {
            notices.push(KeyNotice::new(
                vec![key(name), key(other)],
                NoticeKind::Unknown,
            ));
        }
        table.remove(*name);
    }
    Ok(notices)
}

fn apply(
    table: &mut Table,
    path: &[Segment],
    value: Value,
    effect: Effect,
    notices: &mut Vec<KeyNotice>,
) -> Result<(), ReferenceError> {
    let notice = match effect {
        Effect::Same(ours) => set(table, ours, value),
        Effect::Positive(ours) => {
            let positive = match &value {
                Value::Integer(n) => *n > 0,
                Value::Float(x) => *x > 0.0,
                _ => return Err(wrong_type(path, "a number")),
            };
            if !positive {
                return Ok(());
            }
            set(table, ours, value)
        }
        Effect::Millis(ours) => {
            let millis = match &value {
                Value::Integer(n) => *n as f64,
                Value::Float(x) => *x,
                _ => return Err(wrong_type(path, "a number")),
            };
            if millis <= 0.0 {
                return Ok(());
            }
            set(table, ours, Value::Float(millis / 1000.0))
        }
        Effect::Negated(ours) => {
            let on = value
                .as_bool()
                .ok_or_else(|| wrong_type(path, "a boolean"))?;
            set(table, ours, Value::Boolean(!on))
        }
        Effect::Ignored(why) => NoticeKind::NoEffect { why },
        Effect::Custom(custom) => return apply_custom(table, path, value, custom, notices),
    };
    notices.push(KeyNotice::new(path.to_vec(), notice));
    Ok(())
}

fn apply_custom(
    table: &mut Table,
    path: &[Segment],
    value: Value,
    custom: Custom,
    notices: &mut Vec<KeyNotice>,
) -> Result<(), ReferenceError> {
    let boolean = || value.as_bool().ok_or_else(|| wrong_type(path, "a boolean"));
    let notice = match custom {
        // The reference's switch beats its own metrics_address: so it does here.
        Custom::NoPrometheus if boolean()? => {
            let metrics = subtable(table, "metrics");
            metrics.insert("address".to_owned(), Value::String(String::new()));
            NoticeKind::Mapped {
                to: "metrics.address = \"\" (no metrics endpoint)".to_owned(),
            }
        }
        Custom::NoPrometheus => return Ok(()),
        Custom::DisableVerification if boolean()? => {
            match set(table, &["layer", "verify"], Value::Boolean(false)) {
                NoticeKind::Mapped { to } => NoticeKind::Mapped {
                    to: format!("{to}; chunk digests are still checked"),
                },
                other => other,
            }
        }
        Custom::DisableVerification => return Ok(()),
        Custom::CriKeychain => {
            let on = boolean()?;
            let has_listen_path = table
                .get("cri_keychain")
                .and_then(Value::as_table)
                .is_some_and(|t| t.contains_key("listen_path"));
            notices.push(KeyNotice::new(
                path.to_vec(),
                set(table, &["cri_keychain", "enable"], Value::Boolean(on)),
            ));
            if on && !has_listen_path {
                // The reference serves the proxy on the snapshots socket itself.
                notices.push(KeyNotice::new(
                    path.to_vec(),
                    NoticeKind::NoEffect {
                        why: "the CRI proxy is served on [cri_keychain] listen_path (default \
                              /run/containerd-stargz-grpc/cri.sock), never on the snapshots \
                              socket: point kubelet's --image-service-endpoint there",
                    },
                ));
            }
            return Ok(());
        }
        Custom::ResolverHosts => return resolver_hosts(table, path, value, notices),
    };
    notices.push(KeyNotice::new(path.to_vec(), notice));
    Ok(())
}

/// `[[resolver.host."HOST".mirrors]]` entries: `host` joins `[remote] mirrors."HOST"`
/// (tried in order before HOST itself, as in the reference; HOST itself is not a mirror
/// of itself), `insecure` puts `host` in `[remote] plain_http`. Per-mirror timeouts and
/// headers have no counterpart.
fn resolver_hosts(
    table: &mut Table,
    path: &[Segment],
    value: Value,
    notices: &mut Vec<KeyNotice>,
) -> Result<(), ReferenceError> {
    let Value::Table(hosts) = value else {
        return Err(wrong_type(path, "a table of registry hosts"));
    };
    for (registry, config) in hosts {
        let at = |tail: &[Segment]| -> Vec<Segment> {
            let mut p = path.to_vec();
            p.push(Segment::Key(registry.clone()));
            p.extend_from_slice(tail);
            p
        };
        let Value::Table(mut config) = config else {
            return Err(wrong_type(&at(&[]), "a table"));
        };
        let mirrors = match config.remove("mirrors") {
            None => Vec::new(),
            Some(Value::Array(mirrors)) => mirrors,
            Some(_) => return Err(wrong_type(&at(&[key("mirrors")]), "an array of tables")),
        };
        for other in config.keys() {
            notices.push(KeyNotice::new(at(&[key(other)]), NoticeKind::Unknown));
        }
        for (i, mirror) in mirrors.into_iter().enumerate() {
            let mirror_path = at(&[key("mirrors"), Segment::Index(i)]);
            let Value::Table(mut mirror) = mirror else {
                return Err(wrong_type(&mirror_path, "a table"));
            };
            let field = |name: &str| {
                let mut p = mirror_path.clone();
                p.push(key(name));
                p
            };
            let host = match mirror.remove("host") {
                Some(Value::String(host)) => host,
                _ => return Err(wrong_type(&field("host"), "a host name")),
            };
            if host != registry {
                append(table, &["remote", "mirrors", &registry], &host);
                notices.push(KeyNotice::new(
                    field("host"),
                    NoticeKind::Mapped {
                        to: format!(
                            "{} += {host:?}",
                            render(&[key("remote"), key("mirrors"), key(&registry)])
                        ),
                    },
                ));
            }
            match mirror.remove("insecure") {
                None | Some(Value::Boolean(false)) => {}
                Some(Value::Boolean(true)) => {
                    append(table, &["remote", "plain_http"], &host);
                    notices.push(KeyNotice::new(
                        field("insecure"),
                        NoticeKind::Mapped {
                            to: format!("remote.plain_http += {host:?}"),
                        },
                    ));
                }
                Some(_) => return Err(wrong_type(&field("insecure"), "a boolean")),
            }
            if mirror.remove("request_timeout_sec").is_some() {
                notices.push(KeyNotice::new(
                    field("request_timeout_sec"),
                    NoticeKind::NoEffect {
                        why: "there are no per-host timeouts; [remote] timeout applies to every host",
                    },
                ));
            }
            if mirror.remove("header").is_some() {
                notices.push(KeyNotice::new(
                    field("header"),
                    NoticeKind::NoEffect {
                        why: "extra request headers per host are not supported yet",
                    },
                ));
            }
            for other in mirror.keys() {
                notices.push(KeyNotice::new(field(other), NoticeKind::Unknown));
            }
        }
    }
    Ok(())
}

fn key(name: &str) -> Segment {
    Segment::Key(name.to_owned())
}

fn wrong_type(path: &[Segment], expected: &'static str) -> ReferenceError {
    ReferenceError::WrongType {
        key: render(path),
        expected,
    }
}

/// Removes and returns the value at `path`.
fn take(table: &mut Table, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut current = table;
    for name in parents {
        current = current.get_mut(*name)?.as_table_mut()?;
    }
    current.remove(*last)
}

/// The table under `name`, created when absent (a non-table value there is replaced only
/// if it is not a table: our deserializer would refuse it anyway).
fn subtable<'a>(table: &'a mut Table, name: &str) -> &'a mut Table {
    let entry = table
        .entry(name.to_owned())
        .or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    match entry {
        Value::Table(t) => t,
        _ => unreachable!("replaced by a table above"),
    }
}

/// Sets our key at `ours` to `value` unless the file already sets it.
fn set(table: &mut Table, ours: &[&str], value: Value) -> NoticeKind {
    let Some((last, parents)) = ours.split_last() else {
        return NoticeKind::Unknown;
    };
    let mut current = table;
    for name in parents {
        current = subtable(current, name);
    }
    let ours_rendered = ours.join(".");
    if current.contains_key(*last) {
        return NoticeKind::Overridden {
            ours: ours_rendered,
        };
    }
    let to = format!("{ours_rendered} = {value}");
    current.insert((*last).to_owned(), value);
    NoticeKind::Mapped { to }
}

/// Appends `item` to our string list at `ours` (created when absent) unless present.
fn append(table: &mut Table, ours: &[&str], item: &str) {
    let Some((last, parents)) = ours.split_last() else {
        return;
    };
    let mut current = table;
    for name in parents {
        current = subtable(current, name);
    }
    let list = current
        .entry((*last).to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = list {
        if !items.iter().any(|v| v.as_str() == Some(item)) {
            items.push(Value::String(item.to_owned()));
        }
    }
}
