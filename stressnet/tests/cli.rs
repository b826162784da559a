//! The command line as a script sees it: exit codes agree across subcommands, and a reader that
//! goes away does not make stressnet panic. No node is started.

use std::path::Path;
use std::process::{Command, Stdio};

fn stressnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stressnet"))
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .display()
        .to_string()
}

/// (exit code, stderr)
fn status(args: &[&str]) -> (Option<i32>, String) {
    let out = stressnet().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory that is no run directory is a usage error (2) for every subcommand that takes
/// one, as a bad spec is; 3 is kept for runs and cluster calls that could not be carried out.
#[test]
fn a_directory_that_is_no_run_directory_exits_2_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().display().to_string();
    let missing = tmp.path().join("nope").display().to_string();
    for args in [
        vec!["report", &empty],
        vec!["report", &missing],
        vec!["compare", &empty, &empty],
        vec!["compare", &missing, &empty],
    ] {
        let (code, err) = status(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("not a run directory"), "{args:?}: {err}");
    }
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "kind: SyncNetwork\n").unwrap();
    for sub in ["check", "run", "apply"] {
        let (code, err) = status(&[sub, bad.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{sub}: {err}");
    }
    // clap's own usage errors agree.
    assert_eq!(status(&["report"]).0, Some(2));
    assert_eq!(status(&["no-such-command"]).0, Some(2));
}

/// `stressnet check … | head`: the pipe's reader is gone before anything is written.
#[test]
fn a_closed_stdout_ends_quietly_with_the_usual_exit_code() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = stressnet()
        .args(["check", &example("quickstart.yaml")])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = stressnet().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for code in [
        "0 pass",
        "1 a verdict failed",
        "2 bad spec",
        "3 the",
        "4 inconclusive",
        "130",
    ] {
        assert!(text.contains(code), "{code}: {text}");
    }
}

/// A warm-up that leaves too few leak windows is worth a warning before anyone waits for the run.
#[test]
fn check_warns_when_the_warm_up_leaves_too_little_to_judge() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = |soak: &str| {
        let p = tmp.path().join("s.yaml");
        std::fs::write(
            &p,
            format!(
                "apiVersion: syncnet.dev/v1alpha1\nkind: SyncNetwork\nmetadata: {{name: s}}\n\
                 spec:\n  regions: [{{name: us, replicas: 2}}]\n  \
                 producer: {{region: us, blockIntervalMs: 500, payloadBytes: 4096}}\n  \
                 soak: {soak}\n  verdicts: {{leakBucketSecs: 10}}\n"
            ),
        )
        .unwrap();
        p
    };
    // 100 s after a 30 s warm-up: 7 windows of 10 s, one short of 8.
    let p = spec("{durationSecs: 100, warmupSecs: 30}");
    let (code, err) = status(&["check", p.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning") && err.contains("7 leak windows"),
        "{err}"
    );
    // 8 windows: nothing to say.
    let p = spec("{durationSecs: 110, warmupSecs: 30}");
    let (code, err) = status(&["check", p.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}
