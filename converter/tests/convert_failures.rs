//! What a CI step sees when a conversion cannot even start or finish its writes: a bad
//! reference (usage error, exit 2), a registry that does not answer (as source or as
//! destination), a source layout that is missing, unreadable or lacks the tag, a
//! destination that cannot be written. Each exits 1 (or 2) with one `error:` line naming
//! the cause and the place, prints nothing on stdout even with `--json` (so a later
//! `jq` step fails instead of reading half a result), and tags nothing.

mod convert_support;

use std::path::Path;

use convert_support::*;
use testkit::{write_layout, MediaTypes, Platform};

/// Exit status for invalid command-line arguments (clap's), and for every other failure.
const USAGE: i32 = 2;
const FAILED: i32 = 1;

/// A loopback port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn oci(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

struct Case {
    name: &'static str,
    src: String,
    dst: String,
    code: i32,
    /// Texts the error message must hold (the cause and where it happened).
    says: Vec<String>,
}

#[test]
fn every_failure_exits_non_zero_with_the_cause_and_no_json() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let image = sample_image(40, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&good, "v1", &image).unwrap();
    let not_a_layout = tmp.path().join("empty");
    std::fs::create_dir(&not_a_layout).unwrap();
    let broken_index = tmp.path().join("broken");
    std::fs::create_dir(&broken_index).unwrap();
    std::fs::write(broken_index.join("index.json"), "{").unwrap();
    // A regular file where the destination layout's directory would be.
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let dead = format!("127.0.0.1:{}", closed_port());
    let out = tmp.path().join("out");
    let s = |text: &str| text.to_owned();

    let cases = [
        Case {
            name: "bad source reference",
            src: s("Bad/App:v1"),
            dst: oci(&out, "v1"),
            code: USAGE,
            says: vec![s("Bad/App:v1"), s("invalid repository name")],
        },
        Case {
            name: "destination without a tag",
            src: oci(&good, "v1"),
            dst: format!("{dead}/app@{}", image.manifest.digest),
            code: FAILED,
            says: vec![s("must name a tag")],
        },
        Case {
            name: "source registry does not answer",
            src: format!("{dead}/app:v1"),
            dst: oci(&out, "v1"),
            code: FAILED,
            says: vec![
                format!("{dead}/v2/app/manifests/v1"),
                s("Connection refused"),
            ],
        },
        Case {
            name: "destination registry does not answer",
            src: oci(&good, "v1"),
            dst: format!("{dead}/app:esgz"),
            code: FAILED,
            says: vec![s("push blob"), format!("{dead}/app")],
        },
        Case {
            name: "source is not a layout",
            src: oci(&not_a_layout, "v1"),
            dst: oci(&out, "v1"),
            code: FAILED,
            says: vec![s("is not an OCI image layout"), s("no index.json")],
        },
        Case {
            name: "source index.json is not JSON",
            src: oci(&broken_index, "v1"),
            dst: oci(&out, "v1"),
            code: FAILED,
            says: vec![format!(
                "parse {}",
                broken_index.join("index.json").display()
            )],
        },
        Case {
            name: "source tag missing",
            src: oci(&good, "nope"),
            dst: oci(&out, "v1"),
            code: FAILED,
            says: vec![s("no image tagged \"nope\""), good.display().to_string()],
        },
        Case {
            name: "destination not writable",
            src: oci(&good, "v1"),
            dst: oci(&file, "v1"),
            code: FAILED,
            says: vec![file.display().to_string(), s("Not a directory")],
        },
    ];
    for case in cases {
        let output = run_convert(&["--json", &case.src, &case.dst]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let name = case.name;
        eprintln!("{name}: {stderr}");
        assert_eq!(output.status.code(), Some(case.code), "{name}: {stderr}");
        let error = stderr.lines().find(|l| l.starts_with("error: "));
        let error = error.unwrap_or_else(|| panic!("{name}: no error line: {stderr}"));
        for text in &case.says {
            assert!(
                error.contains(text.as_str()),
                "{name}: {text:?} not in {error}"
            );
        }
        assert!(
            output.stdout.is_empty(),
            "{name}: stdout {:?}",
            output.stdout
        );
        // The destination layout's skeleton may exist (it is opened before the source is
        // read); a tag would be an entry in its index.json.
        assert!(
            !out.join("index.json").exists(),
            "{name}: something was tagged"
        );
    }
}
