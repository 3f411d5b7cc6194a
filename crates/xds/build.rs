//! Copies the Envoy API descriptor set that `envoy-types` ships (generated with its prost types)
//! into OUT_DIR, so the xDS code can convert between protobuf and proto3 JSON by reflection.
//! `envoy-types` does not export the file, so it is found through `cargo metadata`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let cargo = std::env::var("CARGO").expect("CARGO is set for build scripts");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(&manifest_dir)
        .output()
        .expect("run cargo metadata");
    if !out.status.success() {
        panic!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let pkg =
        meta["packages"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == "envoy-types")).expect("envoy-types is a dependency");
    let manifest = PathBuf::from(pkg["manifest_path"].as_str().expect("manifest_path"));
    let bin = manifest.parent().expect("package dir").join("src/generated/types.bin");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("envoy_descriptors.bin");
    std::fs::copy(&bin, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
    println!("cargo:rerun-if-changed={}", bin.display());
    println!("cargo:rerun-if-changed=build.rs");
}
