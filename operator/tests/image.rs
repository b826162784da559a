//! node-image/Dockerfile as a supply-chain reviewer reads it: BuildKit's frontend named by a
//! `# syntax=` line, every base image pinned by digest, dependencies built before the sources are
//! copied, and binaries shipped without their debug info (kept in a target of their own).

fn dockerfile() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../node-image/Dockerfile");
    std::fs::read_to_string(path).unwrap()
}

fn pinned(image: &str) -> bool {
    image
        .split_once("@sha256:")
        .is_some_and(|(_, d)| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn the_frontend_and_every_base_image_are_pinned_by_digest() {
    let text = dockerfile();
    let first = text.lines().next().unwrap();
    let frontend = first
        .strip_prefix("# syntax=")
        .expect("the first line names the BuildKit frontend");
    assert!(pinned(frontend), "{first}");

    let args: std::collections::HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter_map(|a| a.split_once('='))
        .collect();
    let mut stages = vec!["scratch".to_owned()];
    let mut froms = 0;
    for line in text.lines().filter(|l| l.starts_with("FROM ")) {
        froms += 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let image = words[1];
        let resolved = image
            .strip_prefix("${")
            .and_then(|a| a.strip_suffix('}'))
            .map_or(image, |a| args[a]);
        assert!(
            stages.iter().any(|s| s == resolved) || pinned(resolved),
            "{line}: not a digest-pinned image or an earlier stage"
        );
        if let Some(i) = words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
            stages.push(words[i + 1].to_owned());
        }
    }
    assert!(froms >= 5, "{froms} stages");
}

#[test]
fn dependencies_build_before_the_sources_and_binaries_ship_stripped() {
    let text = dockerfile();
    let cook = text.find("cargo chef cook").expect("a dependency layer");
    let build_stage = text.find("AS build").unwrap();
    let copy_sources = text[build_stage..].find("COPY . .").unwrap() + build_stage;
    assert!(
        cook < copy_sources,
        "the dependency build comes before `COPY . .`"
    );
    assert!(text.contains("--strip-debug"), "binaries are stripped");
    assert!(
        text.contains("--only-keep-debug"),
        "and their debug info kept"
    );
    for target in ["AS operator", "AS syncnode", "AS debug-symbols"] {
        assert!(text.contains(target), "{target}");
    }
    for l in text.lines().filter(|l| l.starts_with("USER ")) {
        assert_eq!(l, "USER 65532:65532");
    }
}
