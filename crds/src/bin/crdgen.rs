//! Writes the SyncNetwork CRD YAML where it is committed (`--check` compares instead), or to stdout
//! with `-`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let yaml = syncnet_crds::crd_yaml();
    match args.first().map(String::as_str) {
        Some("-") => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        None | Some("--check") => {
            let check = !args.is_empty();
            // The workspace root: this crate's parent directory.
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut stale = false;
            for rel in syncnet_crds::CRD_FILES {
                let path = root.join(rel);
                let current = std::fs::read_to_string(&path).unwrap_or_default();
                if current == yaml {
                    continue;
                }
                if check {
                    eprintln!("{rel}: differs from the generated CRD");
                    stale = true;
                } else if let Err(e) = std::fs::create_dir_all(path.parent().expect("has a parent"))
                    .and_then(|()| std::fs::write(&path, &yaml))
                {
                    eprintln!("{rel}: {e}");
                    return ExitCode::FAILURE;
                } else {
                    eprintln!("wrote {rel}");
                }
            }
            if stale {
                eprintln!("run `cargo run -p syncnet-crds --bin crdgen` and commit the result");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("usage: crdgen [--check | -]   (unknown argument {other:?})");
            ExitCode::from(2)
        }
    }
}
