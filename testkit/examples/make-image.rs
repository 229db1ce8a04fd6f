//! Builds a test image in code and pushes it to a registry or writes it to an OCI layout.
//!
//! ```text
//! make-image push HOST NAME:TAG [demo|bench[:MIB]|lazy-bench[:MIB]|read-bench[:MIB]]
//! make-image layout DIR TAG [demo|bench[:MIB]|lazy-bench[:MIB]|read-bench[:MIB]]
//! make-image read-set MIB      # the files lazy-bench:MIB's entrypoint reads, one a line
//! make-image fleet HOST REPO N MIB FILES   # REPO:app1..appN and the index REPO:all
//! make-image reads fleet:MIB:FILES:APP | interp:MIB:FILES | scattered:MIB
//! ```
//!
//! `interp:MIB:FILES` and `scattered:MIB` (push or layout) are the on-demand benchmark's
//! images; `fleet` pushes the fleet benchmark's N apps sharing one base layer (gzipped
//! once) and an index over them (for converting the shared layers once). `reads` prints
//! `PATH SIZE` lines: the files that image's entrypoint reads, in reading order.
//!
//! `read-bench:MIB` (default 1024) is one layer with one file of MIB MiB of incompressible
//! bytes at `/data/big.bin`, for the read-throughput benchmark.

use std::path::Path;
use std::process::ExitCode;

use testkit::image::{
    bench_image, demo_image, fleet_read_set, index_blob, interp_image, interp_read_set,
    lazy_bench_image, lazy_bench_read_set, read_bench_image, scattered_image, scattered_read_set,
    FleetBase, InterpBase,
};
use testkit::{write_layout, BuiltImage, MediaTypes, Platform, RegistryClient};

const USAGE: &str =
    "usage: make-image push HOST NAME:TAG [KIND] | make-image layout DIR TAG [KIND] | \
     make-image read-set MIB | make-image fleet HOST REPO N MIB FILES | make-image reads SPEC \
     (KIND: demo, bench[:MIB], lazy-bench[:MIB], read-bench[:MIB], interp:MIB:FILES, \
     scattered:MIB; SPEC: fleet:MIB:FILES:APP, interp:MIB:FILES, scattered:MIB)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("make-image: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    if let [mode, mib] = args {
        if mode == "read-set" {
            for path in lazy_bench_read_set(parse_mib(mib)?) {
                println!("{path}");
            }
            return Ok(());
        }
        if mode == "reads" {
            for (path, size) in reads(mib)? {
                println!("{path} {size}");
            }
            return Ok(());
        }
    }
    if let [mode, host, repo, n, mib, files] = args {
        if mode == "fleet" {
            return push_fleet(
                host,
                repo,
                parse_mib(n)?,
                parse_mib(mib)?,
                parse_mib(files)?,
            );
        }
    }
    let [mode, target, name, rest @ ..] = args else {
        return Err(USAGE.into());
    };
    let image = build(rest.first().map_or("demo", String::as_str))?;
    match mode.as_str() {
        "push" => {
            let (repo, tag) = name.rsplit_once(':').ok_or("NAME:TAG needs a tag")?;
            testkit::image::push_artifact(&RegistryClient::new(target, None), repo, tag, &image)
                .map_err(|e| e.to_string())?;
            println!("{target}/{name}");
        }
        "layout" => {
            write_layout(Path::new(target), name, &image).map_err(|e| e.to_string())?;
            println!("oci:{target}:{name}");
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

fn build(kind: &str) -> Result<BuiltImage, String> {
    let built = match kind.split_once(':') {
        None if kind == "demo" => demo_image(),
        None if kind == "bench" => bench_image(300),
        Some(("bench", mib)) => bench_image(parse_mib(mib)?),
        None if kind == "lazy-bench" => lazy_bench_image(400),
        Some(("lazy-bench", mib)) => lazy_bench_image(parse_mib(mib)?),
        None if kind == "read-bench" => read_bench_image(1024),
        Some(("read-bench", mib)) => read_bench_image(parse_mib(mib)?),
        Some(("interp", rest)) => {
            let (mib, files) = rest.split_once(':').ok_or("interp:MIB:FILES")?;
            interp_image(parse_mib(mib)?, parse_mib(files)?)
        }
        Some(("scattered", mib)) => scattered_image(parse_mib(mib)?),
        _ => return Err(format!("unknown image kind {kind:?}\n{USAGE}")),
    };
    built.map_err(|e| e.to_string())
}

/// The `reads` listing for SPEC.
fn reads(spec: &str) -> Result<Vec<(String, usize)>, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let num = |s: &str| parse_mib(s);
    match parts.as_slice() {
        ["fleet", mib, files, app] => Ok(fleet_read_set(
            &InterpBase::new(num(mib)?, num(files)?),
            num(app)?,
        )),
        ["interp", mib, files] => Ok(interp_read_set(num(mib)?, num(files)?)),
        ["scattered", mib] => Ok(scattered_read_set(num(mib)?)),
        _ => Err(format!("unknown reads spec {spec:?}\n{USAGE}")),
    }
}

/// Pushes fleet apps 1..=n as REPO:appK, then the index REPO:all over them in that order.
fn push_fleet(host: &str, repo: &str, n: usize, mib: usize, files: usize) -> Result<(), String> {
    let client = RegistryClient::new(host, None);
    let fleet = FleetBase::build(mib, files).map_err(|e| e.to_string())?;
    let platform = Platform::linux_amd64();
    let mut manifests = Vec::new();
    for app in 1..=n {
        let image = fleet.app_image(app).map_err(|e| e.to_string())?;
        testkit::image::push_artifact(&client, repo, &format!("app{app}"), &image)
            .map_err(|e| e.to_string())?;
        println!("{host}/{repo}:app{app}");
        manifests.push(image.manifest);
    }
    let entries: Vec<_> = manifests.iter().map(|m| (m, &platform)).collect();
    let index = index_blob(MediaTypes::Oci, &entries).map_err(|e| e.to_string())?;
    client
        .push_manifest(repo, "all", &index.media_type, &index.bytes)
        .map_err(|e| e.to_string())?;
    println!("{host}/{repo}:all");
    Ok(())
}

fn parse_mib(mib: &str) -> Result<usize, String> {
    mib.parse().map_err(|_| format!("bad size {mib}"))
}
