//! Generates the Triple (gRPC) server and client of `proto/greeter.proto` with a vendored `protoc`,
//! so no system install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(config, &["proto/greeter.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/greeter.proto");
    Ok(())
}
