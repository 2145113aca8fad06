//! A bounded run of every fuzz target (a few seconds each): no finding, and the mutator really
//! reaches more than the seeds do. The long runs are `benches/fuzz/run.sh`.

use std::process::Command;

use sd_fuzz::run::Stats;

const SECONDS: &str = "3";

fn fuzz(target: &str) -> Stats {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_sd-fuzz"))
        .args(["--target", target, "--seconds", SECONDS, "--seed", "1", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stats: Stats = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{target}: {e}; stderr: {}", String::from_utf8_lossy(&run.stderr)));
    assert!(run.status.success() && stats.findings.is_empty(), "{target} found: {:#?}", stats.findings);
    assert!(stats.executions >= 100, "{target}: only {} executions", stats.executions);
    assert!(stats.outcomes.len() >= 3, "{target}: only outcomes {:?}", stats.outcomes);
    stats
}

macro_rules! targets {
    ($($test:ident: $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                fuzz($name);
            }
        )*

        #[test]
        fn every_target_has_a_test_and_seeds() {
            let tested = [$($name),*];
            for t in sd_fuzz::targets::all() {
                assert!(tested.contains(&t.name), "no bounded run of {}", t.name);
                let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(t.name);
                assert!(std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0) > 0, "no seeds in {}", seeds.display());
            }
        }
    };
}

targets! {
    npy: "npy",
    pipeline_yaml: "pipeline-yaml",
    lock: "lock",
    classes_json: "classes-json",
    model_json: "model-json",
    head_json: "head-json",
    image: "image",
    onnx: "onnx",
    torch: "torch",
}
