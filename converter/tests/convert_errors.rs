//! Broken sources make `estargz-convert` fail cleanly: non-zero exit, a message naming the
//! layer and the cause, the destination tag untouched, no temporary files left behind.

mod convert_support;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use convert_support::*;
use estargz::testutil::TarBuilder;
use testkit::{write_layout, BuiltImage, MediaTypes, Platform, Prereq};

/// What a failed run left behind.
struct Aftermath {
    stderr: String,
}

/// Writes `image` to a source layout, lets `damage` break it, converts into a destination
/// layout that already holds another tag, and checks that nothing changed there.
fn convert_broken(image: &BuiltImage, damage: impl FnOnce(&Path)) -> Aftermath {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    convert_broken_in(tmp.path(), &work, image, damage)
}

/// Like [`convert_broken`], with the work dir given.
fn convert_broken_in(
    tmp: &Path,
    work: &Path,
    image: &BuiltImage,
    damage: impl FnOnce(&Path),
) -> Aftermath {
    let (src, dst) = (tmp.join("src"), tmp.join("dst"));
    write_layout(&src, "v1", image).unwrap();
    damage(&src);
    let previous = sample_image(99, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&dst, "old", &previous).unwrap();
    let index_before = std::fs::read(dst.join("index.json")).unwrap();
    let files_before = files_under(&dst);

    let stderr = convert_fails(&[
        "--work-dir",
        work.to_str().unwrap(),
        &format!("oci:{}:v1", src.display()),
        &format!("oci:{}:new", dst.display()),
    ]);

    eprintln!("estargz-convert said:\n{stderr}");
    assert_eq!(
        std::fs::read(dst.join("index.json")).unwrap(),
        index_before,
        "index.json changed:\n{stderr}"
    );
    assert_eq!(
        files_under(&dst),
        files_before,
        "files added to the destination:\n{stderr}"
    );
    assert_eq!(
        files_under(work),
        Vec::<PathBuf>::new(),
        "work dir not cleaned:\n{stderr}"
    );
    Aftermath { stderr }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn base_image() -> BuiltImage {
    sample_image(20, MediaTypes::Oci, Platform::linux_amd64())
}

#[test]
fn corrupt_gzip_layer_is_reported_with_its_digest() {
    let image = base_image();
    let mut blob = image.layers[1].blob.bytes.clone();
    let middle = blob.len() / 2;
    for byte in &mut blob[middle..middle + 64] {
        *byte ^= 0x5a;
    }
    let broken = with_layer_blob(&image, 1, blob);
    let digest = broken.layers[1].blob.digest.to_string();

    let after = convert_broken(&broken, |_| {});

    assert!(after.stderr.contains("layer 2/2"), "{}", after.stderr);
    assert!(after.stderr.contains(&digest), "{}", after.stderr);
    assert!(after.stderr.contains("gzip"), "{}", after.stderr);
}

#[test]
fn truncated_layer_is_reported() {
    let image = base_image();
    let blob = image.layers[0].blob.bytes.clone();
    let broken = with_layer_blob(&image, 0, blob[..blob.len() / 3].to_vec());
    let digest = broken.layers[0].blob.digest.to_string();

    let after = convert_broken(&broken, |_| {});

    assert!(
        after.stderr.contains(&format!("layer 1/2 {digest}")),
        "{}",
        after.stderr
    );
}

#[test]
fn tar_entry_escaping_the_root_is_refused() {
    let image = base_image();
    let tar = TarBuilder::new()
        .dir("etc")
        .file("../escape", b"owned")
        .finish();
    let broken = with_layer_blob(&image, 1, gzip(&tar));
    let digest = broken.layers[1].blob.digest.to_string();

    let after = convert_broken(&broken, |_| {});

    assert!(after.stderr.contains(&digest), "{}", after.stderr);
    assert!(after.stderr.contains("../escape"), "{}", after.stderr);
}

#[test]
fn missing_layer_blob_is_reported() {
    let image = base_image();
    let digest = image.layers[0].blob.digest;

    let after = convert_broken(&image, |src| {
        std::fs::remove_file(src.join("blobs/sha256").join(digest.hex())).unwrap();
    });

    assert!(
        after.stderr.contains(&format!("layer 1/2 {digest}")),
        "{}",
        after.stderr
    );
    assert!(after.stderr.contains("not found"), "{}", after.stderr);
}

#[test]
fn blob_not_matching_its_digest_is_reported() {
    let image = base_image();
    let digest = image.layers[1].blob.digest;
    // Same size and still valid gzip of the same tar (the header's MTIME field changed),
    // but no longer the blob the manifest names.
    let original_len = image.layers[1].blob.bytes.len();
    let mut other = image.layers[1].blob.bytes.clone();
    other[4] ^= 0x01;

    let after = convert_broken(&image, |src| {
        let path = src.join("blobs/sha256").join(digest.hex());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            original_len
        );
        std::fs::write(path, &other).unwrap();
    });

    assert!(
        after.stderr.contains(&digest.to_string()),
        "{}",
        after.stderr
    );
    assert!(after.stderr.contains("its sha256 is"), "{}", after.stderr);
}

/// Unmounts a tmpfs when the test ends, however it ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_work_disk_is_reported() {
    testkit::require!(Prereq::Root, Prereq::Binary("/usr/bin/mount"));
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("small");
    std::fs::create_dir(&work).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&work)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a 256 KiB tmpfs");
    let _unmount = Unmount(work.clone());
    let image = base_image();
    assert!(
        image.layers[0].blob.bytes.len() > 512 << 10,
        "layer larger than the disk"
    );

    let after = convert_broken_in(tmp.path(), &work, &image, |_| {});

    assert!(
        after.stderr.contains("No space left on device"),
        "{}",
        after.stderr
    );
    assert!(after.stderr.contains("layer 1/2"), "{}", after.stderr);
}
