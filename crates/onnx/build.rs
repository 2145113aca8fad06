//! Compiles the vendored `proto/onnx.proto` (ONNX 1.23, Apache-2.0) with protox: pure Rust,
//! no `protoc` needed on the build machine.
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["onnx.proto"], ["proto"]).expect("compile proto/onnx.proto");
    prost_build::Config::new().compile_fds(descriptors).expect("generate Rust code for onnx.proto");
}
