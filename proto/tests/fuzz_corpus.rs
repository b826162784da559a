//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`: seeds, and whatever a fuzzing run
//! found worth keeping, crashes included once fixed) through the fuzz entry points, on the stable
//! toolchain, in every test run. `SYNCNET_WRITE_SEEDS=1` (re)writes the binary targets' seeds.

use syncnet_proto::fuzzing;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    if std::env::var_os("SYNCNET_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in fuzzing::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // A panic names the input that caused it.
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(r.is_ok(), "{target}: {} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
}

#[test]
fn wire_frames() {
    replay("wire_frames", fuzzing::wire_frames);
}

#[test]
fn wire_message() {
    replay("wire_message", fuzzing::wire_message);
}

#[test]
fn ida_chunks() {
    replay("ida_chunks", fuzzing::ida_chunks);
}

#[test]
fn netem_preamble() {
    replay("netem_preamble", fuzzing::netem_preamble);
}

#[test]
fn node_config() {
    replay("node_config", fuzzing::node_config);
}

#[test]
fn fault_set() {
    replay("fault_set", fuzzing::fault_set);
}
