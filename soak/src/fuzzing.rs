//! The fuzz entry point for the `SyncNetwork` spec (`fuzz/fuzz_targets/spec.rs`), replayed on the
//! stable toolchain by `tests/fuzz_corpus.rs`: what `stressnet check` does with a spec file.

use std::path::Path;

use syncnet_crds::SyncNetwork;

/// Parses and validates a spec, then plans its nodes and fault schedule (no file, no process).
pub fn spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sn) = SyncNetwork::from_yaml(text) else {
        return;
    };
    let nodes = crate::plan::nodes(&sn.spec, Path::new("RUN_DIR"));
    let _ = crate::plan::schedule(&sn.spec, &nodes, 1);
}
