//! scripts/setup.sh: idempotent, self-documenting, and clear when pip or the network is missing.

use std::process::Command;

fn setup() -> Command {
    let mut c = Command::new(crate::common::root().join("scripts/setup.sh"));
    c.current_dir(crate::common::root());
    c
}

#[test]
fn help_documents_the_script() {
    let o = setup().arg("--help").output().unwrap();
    let out = crate::common::ok(o);
    assert!(out.contains("--gpu") && out.contains(".cache/onnxruntime/cpu/libonnxruntime.so"), "{out}");
    assert!(out.contains("--browser") && out.contains("chromium"), "{out}");
    let o = setup().arg("--bogus").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_second_run_only_checks() {
    crate::common::source_model(); // asserts the first run happened
    let o = setup().output().unwrap();
    let err = crate::common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("already in place") && !err.contains("fetching"), "{err}");
}

#[test]
fn missing_python_or_network_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let o = setup().env("PYTHON", "/nonexistent/python3").env("SMALLDATA_CACHE", cache.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(crate::common::stderr(&o).contains("'/nonexistent/python3' not found"), "{}", crate::common::stderr(&o));

    // An unreachable package index stands in for a machine without network.
    let o = setup()
        .env("SMALLDATA_CACHE", cache.path())
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_RETRIES", "0")
        .env("PIP_TIMEOUT", "2")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .output()
        .unwrap();
    let err = crate::common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("pip could not download onnxruntime==1.32.0") && err.contains("network"), "{err}");
}
