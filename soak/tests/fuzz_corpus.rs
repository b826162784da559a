//! Replays the committed `spec` fuzz corpus (`fuzz/corpus/spec/`) through the fuzz entry point on
//! the stable toolchain (see proto/tests/fuzz_corpus.rs for the others).

#[test]
fn spec() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/spec");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| soak::fuzzing::spec(&data));
        assert!(r.is_ok(), "{} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}
