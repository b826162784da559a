use super::*;
use pprof::protos::{Function, Line, Location, Profile, Sample, ValueType};

/// A frame as a debug build names it: full path, no file.
fn fr(name: &str) -> Frame {
    Frame {
        name: name.to_owned(),
        file: String::new(),
        line: 0,
    }
}

/// A frame as a release build names an inlined function: short name, file and line.
fn at(name: &str, file: &str, line: i64) -> Frame {
    Frame {
        name: name.to_owned(),
        file: file.to_owned(),
        line,
    }
}

fn stack(frames: &[&str], value: i64) -> Stack {
    Stack {
        frames: frames.iter().map(|s| fr(s)).collect(),
        value,
    }
}

const STD_VEC: &str =
    "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/vec/mod.rs";
const CANARY: &str = "/work/main/node/src/canary.rs";

#[test]
fn a_site_is_past_the_allocator_and_the_standard_library() {
    // The shape of a real stack from a debug node's heap profile (leaf first).
    let debug: Vec<Frame> = [
        "prof_backtrace_impl",
        "_rjem_je_prof_backtrace",
        "prof_alloc_prep",
        "imalloc_body",
        "_rjem_je_malloc_default",
        "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc",
        "__rustc::__rust_alloc",
        "<alloc::raw_vec::RawVecInner>::try_allocate_in",
        "alloc::vec::from_elem",
        "syncnet_node::canary::leak_canary_alloc",
        "syncnet_node::canary::Canaries::leak_memory",
        "tokio::runtime::task::core::Core<T,S>::poll",
        // catch_unwind's, at the root of every task: no allocator entry.
        "__rust_try",
        "tokio::runtime::task::harness::poll_future",
    ]
    .iter()
    .map(|n| fr(n))
    .collect();
    let (i, f) = site_of(&debug).unwrap();
    assert_eq!(
        (i, f.name.as_str()),
        (9, "syncnet_node::canary::leak_canary_alloc")
    );
    // The same from a release node: inlined frames have short names but source paths.
    let release = vec![
        fr("prof_backtrace_impl"),
        fr("_rjem_je_malloc_default"),
        at(
            "alloc",
            "/root/.cargo/registry/src/index.crates.io-1/tikv-jemallocator-0.7.0/src/lib.rs",
            120,
        ),
        at(
            "alloc_impl",
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/alloc.rs",
            188,
        ),
        at("from_elem<u8>", STD_VEC, 3200),
        at("leak_canary_alloc", CANARY, 178),
        at("leak_memory", CANARY, 99),
    ];
    let (i, f) = site_of(&release).unwrap();
    assert_eq!(i, 5);
    assert_eq!(f.label(), "leak_canary_alloc (node/src/canary.rs:178)");
    // A C allocation straight into jemalloc, from a trait impl of the node.
    let c = vec![
        fr("imalloc"),
        fr("malloc"),
        fr("<syncnet_node::store::Store as core::ops::Drop>::drop"),
    ];
    assert_eq!(site_of(&c).unwrap().0, 2);
    // A CPU stack has no allocator: the first frame outside std.
    let cpu = vec![
        at("spin_loop", "/rustc/x/library/core/src/hint.rs", 9),
        at("cpu_canary_burn", CANARY, 195),
    ];
    assert_eq!(site_of(&cpu).unwrap().1.name, "cpu_canary_burn");
    // A dependency's function called in a loop by the node's own: the node's is the site, and
    // the stack starts at the dependency's.
    let hashing = vec![
        at("hash<u64>", "/rustc/x/library/core/src/hash/mod.rs", 1),
        at(
            "hash<H>",
            "/root/.cargo/registry/src/index.crates.io-1/multihash-0.19.3/src/multihash.rs",
            296,
        ),
        at("cooldown_until", "/work/main/node/src/streams.rs", 437),
        at("drive", "/work/main/node/src/streams.rs", 846),
    ];
    assert_eq!(inner_of(&hashing), Some(1));
    assert_eq!(
        site_of(&hashing).unwrap().1.label(),
        "cooldown_until (node/src/streams.rs:437)"
    );
    let sites = hot(
        &[Stack {
            frames: hashing,
            value: 10,
        }],
        5,
    );
    assert_eq!(
        sites[0].stack[0],
        "hash<H> (multihash-0.19.3/src/multihash.rs:296)"
    );
    assert_eq!(
        sites[0].stack[1],
        "cooldown_until (node/src/streams.rs:437)"
    );
    // Debug builds name frames without files: nothing is known to be own code, and the first
    // frame outside std stays the site.
    assert!(!is_own(&fr("syncnet_node::streams::StreamManager::drive")));
    // Only library frames: the leaf stands for them.
    assert_eq!(
        site_of(&[fr("std::thread::park"), fr("core::ops::f")])
            .unwrap()
            .0,
        0
    );
    assert_eq!(site_of(&[]), None);
    assert!(is_library(&at(
        "reserve_rehash",
        "/rust/deps/hashbrown-0.15.5/src/raw/mod.rs",
        1
    )));
    for f in [
        "tokio::runtime::task::raw::poll",
        "allocator_api2::x",
        "mallory::steal",
        "<syncnet_node::p2p::Driver as core::ops::Drop>::drop",
    ] {
        assert!(!is_library(&fr(f)) && !is_allocator_entry(&fr(f)), "{f}");
    }
    // Trait methods of primitive or generic types are the trait's crate's.
    for f in [
        "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
        "<I as alloc::sync::ToArcSlice<T>>::to_arc_slice",
        "<&mut core::fmt::Formatter>::write_str",
        "<u64>::rotate_left",
        "<[T]>::sort_by",
    ] {
        assert!(is_library(&fr(f)), "{f}");
    }
    // jemalloc's own allocations (its C sources) are the allocator's.
    assert!(is_library(&at(
        "prof_alloc_prep",
        "/w/target/release/build/tikv-jemalloc-sys-1/out/build/include/jemalloc/internal/prof_inlines.h",
        171
    )));
}

#[test]
fn the_profilers_own_memory_is_set_apart() {
    let s = vec![
        stack(
            &[
                "malloc",
                "gimli::read::abbrev::Abbreviations::insert",
                "x::y",
            ],
            300,
        ),
        stack(
            &[
                "__rust_alloc",
                "<pprof::collector::Bucket<T> as core::default::Default>::default",
            ],
            80,
        ),
        stack(
            &[
                "__rust_alloc",
                "mk_or_other<backtrace::symbolize::gimli::elf::new>",
            ],
            7,
        ),
        stack(
            &[
                "__rust_alloc",
                "syncnet_node::canary::leak_canary_alloc",
                // Every thread starts here; it is std's, not the backtrace crate's.
                "std::sys::backtrace::__rust_begin_short_backtrace",
            ],
            5,
        ),
    ];
    let (node, profiler) = split_profiler(&s);
    assert_eq!(node, [s[3].clone()]);
    assert_eq!(profiler, 387.0);
}

#[test]
fn growth_is_end_minus_warm_up_per_site_largest_first() {
    let canary = [
        "alloc::alloc::alloc",
        "syncnet_node::canary::leak_canary_alloc",
        "syncnet_node::p2p::Driver::on_setup",
    ];
    let buffers = [
        "alloc::raw_vec::finish_grow",
        "syncnet_node::wire::read_frame",
    ];
    let before = vec![stack(&canary, 1 << 20), stack(&buffers, 8 << 20)];
    let after = vec![
        stack(&canary, 9 << 20),
        // The same site through another caller adds up.
        stack(
            &[
                "alloc::alloc::alloc",
                "syncnet_node::canary::leak_canary_alloc",
            ],
            1 << 20,
        ),
        stack(&buffers, 6 << 20),
        stack(&["syncnet_node::store::Store::open"], 1 << 20),
    ];
    let g = growth(&before, &after, 5);
    assert_eq!(g.len(), 2, "{g:?}");
    assert_eq!(g[0].site, "syncnet_node::canary::leak_canary_alloc");
    assert_eq!(g[0].value, (9 << 20) as f64);
    assert_eq!(
        g[0].stack,
        [
            "syncnet_node::canary::leak_canary_alloc",
            "syncnet_node::p2p::Driver::on_setup"
        ]
    );
    assert_eq!(g[1].site, "syncnet_node::store::Store::open");
    // Shrinking sites are not growth; top-1 keeps the largest.
    assert_eq!(growth(&before, &after, 1).len(), 1);
    // Lines of one function are one site, labelled with its heaviest line.
    let lines = vec![
        Stack {
            frames: vec![at("leak_canary_alloc", CANARY, 178)],
            value: 3,
        },
        Stack {
            frames: vec![at("leak_canary_alloc", CANARY, 180)],
            value: 5,
        },
    ];
    let g = growth(&[], &lines, 5);
    assert_eq!(g.len(), 1);
    assert_eq!(
        (g[0].site.as_str(), g[0].value),
        ("leak_canary_alloc (node/src/canary.rs:180)", 8.0)
    );
}

#[test]
fn hot_sites_are_shares_of_the_samples() {
    let s = vec![
        stack(
            &[
                "core::hint::spin_loop",
                "syncnet_node::canary::cpu_canary_burn",
            ],
            60,
        ),
        stack(&["syncnet_node::streams::StreamManager::drive"], 30),
        stack(&["malloc"], 10),
    ];
    let h = hot(&s, 2);
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].site, "syncnet_node::canary::cpu_canary_burn");
    assert!((h[0].value - 0.6).abs() < 1e-12);
    assert!((h[1].value - 0.3).abs() < 1e-12);
    assert!(hot(&[], 3).is_empty());
}

fn profile() -> Profile {
    // Strings: 0 "", 1..2 the sample type, 3..5 functions, 6 a file.
    let strings = [
        "",
        "inuse_space",
        "bytes",
        "alloc::alloc::alloc",
        "syncnet_node::canary::leak_canary_alloc::h0123456789abcdef",
        "syncnet_node::p2p::Driver::run",
        "/work/main/node/src/canary.rs",
    ];
    let f = |id: u64, name: i64, filename: i64| Function {
        id,
        name,
        filename,
        ..Default::default()
    };
    let loc = |id: u64, fns: &[u64]| Location {
        id,
        line: fns
            .iter()
            .map(|&function_id| Line {
                function_id,
                line: 7,
            })
            .collect(),
        ..Default::default()
    };
    Profile {
        sample_type: vec![ValueType { ty: 1, unit: 2 }],
        sample: vec![Sample {
            // Leaf first; location 2 holds an inlined frame and its caller.
            location_id: vec![1, 2],
            value: vec![4096],
            ..Default::default()
        }],
        location: vec![loc(1, &[1]), loc(2, &[2, 3])],
        function: vec![f(1, 3, 0), f(2, 4, 6), f(3, 5, 0)],
        string_table: strings.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[inline(never)]
fn a_function_to_find(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(31))
}

/// The load address of this test binary: the start of its mapping at file offset 0.
fn base_of_this_binary() -> u64 {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            l.ends_with(exe.to_str().unwrap()) && l.split_whitespace().nth(2) == Some("00000000")
        })
        .unwrap();
    u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
}

#[test]
fn addresses_are_symbolized_from_the_binary_of_their_mapping() {
    a_function_to_find(1);
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let addr = a_function_to_find as *const () as u64 - base_of_this_binary();
    // A profile as the node serves it: an address and the mapping's file, no lines.
    let p = Profile {
        sample_type: vec![ValueType { ty: 1, unit: 2 }],
        sample: vec![Sample {
            location_id: vec![1],
            value: vec![9],
            ..Default::default()
        }],
        mapping: vec![pprof::protos::Mapping {
            id: 1,
            filename: 3,
            ..Default::default()
        }],
        location: vec![Location {
            id: 1,
            mapping_id: 1,
            address: addr,
            ..Default::default()
        }],
        string_table: vec![
            "".into(),
            "samples".into(),
            "count".into(),
            exe.to_str().unwrap().into(),
        ],
        ..Default::default()
    };
    let mut sym = Symbolizer::default();
    let s = parse(&p.encode_to_vec(), &mut sym).unwrap();
    let leaf = &s[0].frames[0];
    assert!(leaf.name.ends_with("a_function_to_find"), "{leaf:?}");
    assert!(leaf.file.ends_with("attribution/tests.rs"), "{leaf:?}");
    // An unreadable binary leaves the address.
    assert_eq!(
        sym.frames("/nonexistent/syncnode", "", 0x1234)[0].name,
        "0x1234"
    );
    assert!(sym.problems()[0].starts_with("/nonexistent/syncnode: "));
    // Another build of the binary than the one profiled: addresses, and said why.
    let exe = exe.to_str().unwrap();
    assert_eq!(sym.frames(exe, "00ff", addr)[0].name, format!("{addr:#x}"));
    assert!(
        sym.problems()
            .iter()
            .any(|p| p.contains("not the binary that was profiled"))
    );
}

#[test]
fn a_cpu_sample_starts_where_the_thread_was_not_in_the_signal_handler() {
    let frames = vec![
        fr("backtrace::backtrace::trace_unsynchronized"),
        fr("pprof::profiler::perf_signal_handler"),
        fr("__restore_rt"),
        fr("syncnet_node::canary::cpu_canary_burn"),
        fr("tokio::runtime::blocking::pool::Inner::run"),
    ];
    let s = without_signal_frames(frames.clone());
    assert_eq!(s, frames[3..]);
    assert_eq!(without_signal_frames(frames[3..].to_vec()), frames[3..]);
}

#[test]
fn a_pprof_profile_decodes_gzipped_or_not_into_leaf_first_stacks() {
    let raw = profile().encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let gz = gz.finish().unwrap();
    for bytes in [&raw, &gz] {
        let s = parse(bytes, &mut Symbolizer::default()).unwrap();
        assert_eq!(
            s,
            [Stack {
                frames: vec![
                    at("alloc::alloc::alloc", "", 7),
                    at(
                        "syncnet_node::canary::leak_canary_alloc",
                        "/work/main/node/src/canary.rs",
                        7
                    ),
                    at("syncnet_node::p2p::Driver::run", "", 7),
                ],
                value: 4096
            }]
        );
    }
    // Garbage is an error, not a panic.
    let mut sym = Symbolizer::default();
    assert!(parse(b"\x1f\x8bnot gzip", &mut sym).is_err());
    assert!(parse(&[0xff; 64], &mut sym).is_err());
}
