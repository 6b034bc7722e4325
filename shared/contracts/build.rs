//! Generates the tonic/prost code from `proto/` with the vendored protoc, so no machine
//! needs protoc installed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = [
        "common.proto",
        "command_service.proto",
        "query_service.proto",
    ]
    .iter()
    .map(|f| root.join("orders/v1").join(f))
    .collect();
    let descriptor = PathBuf::from(env::var("OUT_DIR")?).join("orders_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .compile_protos(&files, std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
