//! Builds a test image in code and pushes it to a registry or writes it to an OCI layout.
//!
//! ```text
//! make-image push HOST NAME:TAG [demo|bench[:MIB]|lazy-bench[:MIB]|read-bench[:MIB]]
//! make-image layout DIR TAG [demo|bench[:MIB]|lazy-bench[:MIB]|read-bench[:MIB]]
//! make-image read-set MIB      # the files lazy-bench:MIB's entrypoint reads, one a line
//! ```
//!
//! `read-bench:MIB` (default 1024) is one layer with one file of MIB MiB of incompressible
//! bytes at `/data/big.bin`, for the read-throughput benchmark.

use std::path::Path;
use std::process::ExitCode;

use testkit::image::{
    bench_image, demo_image, lazy_bench_image, lazy_bench_read_set, read_bench_image,
};
use testkit::{write_layout, BuiltImage, RegistryClient};

const USAGE: &str =
    "usage: make-image push HOST NAME:TAG [KIND] | make-image layout DIR TAG [KIND] | \
     make-image read-set MIB (KIND: demo, bench[:MIB], lazy-bench[:MIB], read-bench[:MIB])";

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
        _ => return Err(format!("unknown image kind {kind:?}\n{USAGE}")),
    };
    built.map_err(|e| e.to_string())
}

fn parse_mib(mib: &str) -> Result<usize, String> {
    mib.parse().map_err(|_| format!("bad size {mib}"))
}
