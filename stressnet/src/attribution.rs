//! Attribution: the code behind a verdict, from the pprof profiles the runner took of each node
//! (`profiles/` in the run directory; the node serves them on its control API).
//!
//! - A leak names its **top growing allocation sites**: bytes in use per site at the end of the run
//!   minus at the end of the warm-up, from two heap profiles of the same process.
//! - A CPU or storm verdict names the node's **top functions**: the share of CPU samples per site
//!   over the last seconds of the run.
//!
//! A *site* is the first frame of a stack, from the leaf, past the allocator and outside the
//! standard library, preferring the program's own code to its dependencies: for `Vec::push`
//! growing a buffer in `Session::on_frame`, the site is `Session::on_frame
//! (node/src/p2p/session.rs:123)`, which is where a reader would look. Names
//! need their module path for that (release builds carry function-level debug info for it; with
//! line tables alone, inlined functions have short names and source paths decide). Pure: bytes
//! in, tables out.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use prost::Message;
use serde::{Deserialize, Serialize};

/// The subdirectory of a run directory holding the profiles and their index.
pub const DIR: &str = "profiles";
/// What was taken when: [`Taken`] records, JSON.
pub const INDEX: &str = "profiles/index.json";
/// How many sites a table names.
pub const TOP: usize = 5;
/// How many frames of a site's heaviest stack are kept (from the site towards the root).
pub const STACK_FRAMES: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Heap in use at the end of the warm-up.
    HeapWarmup,
    /// Heap in use at the end of the run.
    HeapEnd,
    /// CPU samples over the last seconds of the run.
    CpuEnd,
}

impl Kind {
    pub fn file_name(self, node: &str) -> String {
        let k = match self {
            Kind::HeapWarmup => "heap-warmup",
            Kind::HeapEnd => "heap-end",
            Kind::CpuEnd => "cpu-end",
        };
        format!("{node}.{k}.pb.gz")
    }
}

/// One profile the runner took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Taken {
    pub node: String,
    pub kind: Kind,
    /// Run time at which it was asked for, seconds.
    pub t: f64,
    /// Which process of the node (0 = first start; each restart adds one): a heap diff needs
    /// both profiles from the same one.
    pub life: u32,
    /// File under `profiles/`, or why there is none.
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One frame of a stack: the function (short in release builds, whose line tables name inlined
/// functions without their path), and where it is, when the profile says (`file:line`).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub name: String,
    pub file: String,
    pub line: i64,
}

impl Frame {
    /// `name (crate/src/file.rs:line)`: what a site is called in tables.
    pub fn label(&self) -> String {
        if self.file.is_empty() {
            return self.name.clone();
        }
        format!("{} ({}:{})", self.name, short_path(&self.file), self.line)
    }
}

/// A source path from its crate's directory on: `node/src/canary.rs`,
/// `tokio-1.47.1/src/runtime/task/raw.rs`, `library/alloc/src/vec/mod.rs`.
fn short_path(file: &str) -> &str {
    match file.rfind("/src/") {
        Some(i) => {
            let crate_start = file[..i].rfind('/').map_or(0, |j| j + 1);
            &file[crate_start..]
        }
        None => file,
    }
}

/// One stack of a profile, leaf first, with its value (bytes in use, or CPU nanoseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    pub frames: Vec<Frame>,
    pub value: i64,
}

/// A site and what it accounts for (the verdicts carry it, so it lives with them).
pub use soak::judge::Site;

/// What the profiles say about one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeAttribution {
    pub node: String,
    /// Top growing allocation sites, bytes.
    pub heap_growth: Vec<Site>,
    /// Heap in use at the end, bytes (sampled estimate), and at the warm-up's end; without the
    /// profilers' own memory, which is `heap_profiler_bytes` at the end.
    pub heap_end_bytes: Option<f64>,
    pub heap_warmup_bytes: Option<f64>,
    pub heap_profiler_bytes: Option<f64>,
    /// Top CPU sites, share of samples.
    pub cpu: Vec<Site>,
    /// Why a part is missing (no profile, a restart between the two heap profiles, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Symbolizes addresses from the binaries a profile's mappings name (the node serves profiles
/// unsymbolized: see `syncnet_node::profile`). One parsed binary serves every node that runs it.
/// A binary that cannot be read, or is not the one profiled (another build id: rebuilt since the
/// run), leaves its frames as addresses, and [`Symbolizer::problems`] says so.
#[derive(Default)]
pub struct Symbolizer {
    binaries: HashMap<String, Binary>,
}

struct Binary {
    loader: Option<addr2line::Loader>,
    /// Hex, as pprof mappings carry it.
    build_id: Option<String>,
    problem: Option<String>,
}

impl Binary {
    fn open(path: &str) -> Binary {
        let build_id = std::fs::File::open(path).ok().and_then(|f| {
            // Reads only the headers and notes, not the whole binary.
            let cache = object::ReadCache::new(f);
            let file = object::File::parse(&cache).ok()?;
            let id = object::Object::build_id(&file).ok()??;
            Some(id.iter().map(|b| format!("{b:02x}")).collect::<String>())
        });
        match addr2line::Loader::new(path) {
            Ok(l) => Binary {
                loader: Some(l),
                build_id,
                problem: None,
            },
            Err(e) => Binary {
                loader: None,
                build_id,
                problem: Some(format!("{path}: {e}")),
            },
        }
    }
}

impl Symbolizer {
    /// The frames at `addr` (an address within the file `path` as linked), innermost first: the
    /// inlined functions from DWARF, else the symbol table's name, else the address.
    /// `build_id` is the profiled binary's (hex), if the profile says.
    pub fn frames(&mut self, path: &str, build_id: &str, addr: u64) -> Vec<Frame> {
        let b = self
            .binaries
            .entry(path.to_owned())
            .or_insert_with(|| Binary::open(path));
        let unknown = || Frame {
            name: format!("{addr:#x}"),
            file: String::new(),
            line: 0,
        };
        if !build_id.is_empty() && b.build_id.as_deref().is_some_and(|id| id != build_id) {
            b.problem = Some(format!(
                "{path} is not the binary that was profiled (build id {} there, {build_id} in the \
                 profile: rebuilt since the run?); its frames are left as addresses",
                b.build_id.as_deref().unwrap_or("?")
            ));
            return vec![unknown()];
        }
        let Some(l) = &b.loader else {
            return vec![unknown()];
        };
        let mut out = vec![];
        if let Ok(mut it) = l.find_frames(addr) {
            while let Ok(Some(f)) = it.next() {
                let Some(name) = f.function.as_ref().and_then(|n| n.demangle().ok()) else {
                    continue;
                };
                out.push(Frame {
                    name: clean(&name),
                    file: f
                        .location
                        .as_ref()
                        .and_then(|l| l.file)
                        .unwrap_or("")
                        .to_owned(),
                    line: f.location.and_then(|l| l.line).map_or(0, i64::from),
                });
            }
        }
        if out.is_empty() {
            out.push(match l.find_symbol(addr) {
                Some(sym) => Frame {
                    name: clean(&addr2line::demangle_auto(sym.into(), None)),
                    file: String::new(),
                    line: 0,
                },
                None => unknown(),
            });
        }
        out
    }

    /// Binaries that could not be used, and why.
    pub fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .binaries
            .values()
            .filter_map(|b| b.problem.clone())
            .collect();
        v.sort();
        v
    }
}

/// Decodes a pprof profile (gzipped or not) into stacks of its last sample type (pprof's
/// default: `inuse_space` for jemalloc's, samples for CPU). Locations with lines are taken as
/// they are; locations with an address only are symbolized from their mapping's file.
pub fn parse(bytes: &[u8], sym: &mut Symbolizer) -> Result<Vec<Stack>, String> {
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = vec![];
        // Profiles are tens to hundreds of KiB; the cap keeps a corrupt or hostile file bounded.
        flate2::read::GzDecoder::new(bytes)
            .take(256 << 20)
            .read_to_end(&mut out)
            .map_err(|e| format!("gunzip: {e}"))?;
        raw = out;
        &raw[..]
    } else {
        bytes
    };
    let p = pprof::protos::Profile::decode(bytes).map_err(|e| format!("pprof: {e}"))?;
    let string = |i: i64| {
        p.string_table
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .map_or("", String::as_str)
    };
    let functions: HashMap<u64, (&str, &str)> = p
        .function
        .iter()
        .map(|f| (f.id, (string(f.name), string(f.filename))))
        .collect();
    let mappings: HashMap<u64, (&str, &str)> = p
        .mapping
        .iter()
        .map(|m| (m.id, (string(m.filename), string(m.build_id))))
        .collect();
    // A location's frames: the innermost (inlined) function first, as pprof orders lines.
    let locations: HashMap<u64, Vec<Frame>> = p
        .location
        .iter()
        .map(|l| {
            let frames: Vec<Frame> = if l.line.is_empty() {
                match mappings.get(&l.mapping_id) {
                    Some((path, id)) if !path.is_empty() => sym.frames(path, id, l.address),
                    _ => vec![Frame {
                        name: format!("{:#x}", l.address),
                        file: String::new(),
                        line: 0,
                    }],
                }
            } else {
                l.line
                    .iter()
                    .map(|ln| {
                        let (name, file) =
                            functions.get(&ln.function_id).copied().unwrap_or(("?", ""));
                        Frame {
                            name: clean(name),
                            file: file.to_owned(),
                            line: ln.line,
                        }
                    })
                    .collect()
            };
            (l.id, frames)
        })
        .collect();
    let Some(idx) = p.sample_type.len().checked_sub(1) else {
        return Err("pprof: no sample type".into());
    };
    Ok(p.sample
        .iter()
        .filter_map(|s| {
            let value = *s.value.get(idx)?;
            let frames: Vec<Frame> = s
                .location_id
                .iter()
                .flat_map(|id| locations.get(id).cloned().unwrap_or_default())
                .collect();
            Some(Stack {
                frames: without_signal_frames(frames),
                value,
            })
        })
        .collect())
}

/// A CPU sample's stack starts in the profiler's signal handler, then the kernel's return
/// trampoline: both go, so the stack starts where the sampled thread was.
fn without_signal_frames(mut frames: Vec<Frame>) -> Vec<Frame> {
    if let Some(i) = frames
        .iter()
        .rposition(|f| f.name.contains("perf_signal_handler"))
    {
        let mut cut = i + 1;
        if frames
            .get(cut)
            .is_some_and(|f| f.name == "__restore_rt" || f.name.starts_with("0x"))
        {
            cut += 1;
        }
        frames.drain(..cut);
    }
    frames
}

/// A function name without the hash suffix rustc's legacy mangling leaves (`::h0123…`).
fn clean(name: &str) -> String {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head.to_owned()
        }
        _ => name.to_owned(),
    }
}

/// Whether a frame is standard-library or allocator code: by the crate its path starts in, or for
/// a name without a path (a C function, or a short name from a build with line tables only) by its
/// source path.
pub fn is_library(f: &Frame) -> bool {
    if f.file.contains("/jemalloc/") || f.file.contains("tikv-jemalloc") {
        return true;
    }
    let r = root(&f.name);
    if r.len() < f.name.len() {
        return matches!(r, "std" | "core" | "alloc" | "hashbrown");
    }
    f.file.starts_with("/rustc/")
        || f.file.contains("/library/std/")
        || f.file.contains("/library/core/")
        || f.file.contains("/library/alloc/")
        || f.file.contains("/hashbrown-")
}

/// The crate a function's path starts in. For a trait method, `<Type as Trait>::m`, the type's
/// crate when the type has a path (`<syncnet_node::Driver as core::ops::Drop>::drop` is the
/// node's), else the trait's (`<u8 as alloc::vec::SpecFromElem>::from_elem` is alloc's).
fn root(name: &str) -> &str {
    fn head(p: &str) -> &str {
        let p = p.trim_start_matches(['<', '&']);
        let p = p.strip_prefix("mut ").unwrap_or(p);
        let p = p.strip_prefix("dyn ").unwrap_or(p);
        p.split("::").next().unwrap_or(p)
    }
    if name.starts_with('<')
        && let Some((ty, tr)) = name.split_once(" as ")
        && !ty.contains("::")
    {
        return head(tr);
    }
    // Inherent methods of primitives (`<u64>::rotate_left`, `<[T]>::sort`) are core's.
    let h = head(name).trim_end_matches('>');
    if h.starts_with('[')
        || matches!(
            h,
            "u8" | "u16"
                | "u32"
                | "u64"
                | "u128"
                | "usize"
                | "i8"
                | "i16"
                | "i32"
                | "i64"
                | "i128"
                | "isize"
                | "f32"
                | "f64"
                | "bool"
                | "char"
                | "str"
        )
    {
        return "core";
    }
    head(name)
}

/// Whether a frame is where allocation enters the allocator: Rust's allocation shims, the global
/// allocator (tikv-jemallocator's source), jemalloc's exported entry points and the C allocation
/// calls. Every frame up to the last of these is the allocator at work.
fn is_allocator_entry(f: &Frame) -> bool {
    let n = f.name.as_str();
    n.contains("GlobalAlloc>::")
        // Rust's allocation shims, not every `__rust_` symbol: `__rust_try` is catch_unwind's,
        // at the root of every tokio task.
        || ["__rust_alloc", "__rust_realloc", "__rust_dealloc", "__rust_alloc_zeroed"]
            .iter()
            .any(|shim| n.trim_start_matches("__rustc::") == *shim)
        || n.starts_with("__rdl_")
        || n.starts_with("_rjem_")
        || f.file.contains("/tikv-jemallocator-")
        || matches!(
            n,
            "malloc" | "calloc" | "realloc" | "free" | "posix_memalign" | "aligned_alloc"
        )
}

/// Crates of the profilers themselves: their symbol caches and sample tables are what taking a
/// profile costs, not the node's doing, so stacks through them are set apart
/// ([`split_profiler`]). Matched on names, generic arguments included (`Vec<gimli::…>::push`);
/// not on files, which a profile keeps per function *name* (short names share one).
const PROFILER: &[&str] = &[
    "jemalloc_pprof",
    "pprof_util",
    "pprof",
    "backtrace",
    "addr2line",
    "gimli",
];

fn is_profiler(frames: &[Frame]) -> bool {
    frames.iter().any(|f| {
        f.name.contains("syncnet_node::profile::")
            // Every path in the name, generic arguments included, by its first segment:
            // `Vec<gimli::Abbreviation>::push` is gimli's; `std::sys::backtrace::…` is std's.
            || f.name
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .any(|path| PROFILER.contains(&path.split("::").next().unwrap_or("")))
    })
}

/// Stacks of the node's own work, and the bytes (or samples) of the profilers themselves.
pub fn split_profiler(stacks: &[Stack]) -> (Vec<Stack>, f64) {
    let (prof, node): (Vec<&Stack>, Vec<&Stack>) =
        stacks.iter().partition(|s| is_profiler(&s.frames));
    (
        node.into_iter().cloned().collect(),
        prof.iter().map(|s| s.value as f64).sum(),
    )
}

/// Where a stack's own story starts (leaf first): past the allocator (up to its last entry
/// point), the first frame that is not standard-library code; the leaf when there is none.
fn inner_of(frames: &[Frame]) -> Option<usize> {
    let past = frames
        .iter()
        .rposition(is_allocator_entry)
        .map_or(0, |i| i + 1);
    frames
        .iter()
        .skip(past)
        .position(|f| !is_library(f))
        .map(|i| i + past)
        .or((!frames.is_empty()).then_some(0))
}

/// Whether a frame is the profiled program's own code: a source file that is neither the
/// standard library nor a dependency (cargo's registry and git checkouts, vendored `deps/`, a
/// build script's output such as jemalloc's C sources). A frame without a file (a debug build's
/// symbol) is not known to be.
fn is_own(f: &Frame) -> bool {
    let dependency = ["/registry/src/", "/git/checkouts/", "/rust/deps/"]
        .iter()
        .any(|d| f.file.contains(d))
        || (f.file.contains("/build/") && f.file.contains("/out/"));
    !(f.file.is_empty() || is_library(f) || dependency)
}

/// The site of a stack and its index: from [`inner_of`] towards the root, the first frame of the
/// program's own code ([`is_own`]), else that inner frame. A busy loop hashing peer ids spends
/// its samples in the hash function of a dependency; the site is the node's function that keeps
/// calling it (`StreamManager::cooldown_until`), and the stack shown starts at the inner frame.
fn site_of(frames: &[Frame]) -> Option<(usize, &Frame)> {
    let inner = inner_of(frames)?;
    let i = frames[inner..]
        .iter()
        .position(is_own)
        .map_or(inner, |j| inner + j);
    Some((i, &frames[i]))
}

/// Per site (function and file; lines of one function add up): the value, and the label and
/// stack of its heaviest stack.
fn by_site(stacks: &[Stack]) -> HashMap<String, (f64, i64, String, Vec<String>)> {
    let mut m: HashMap<String, (f64, i64, String, Vec<String>)> = HashMap::new();
    for s in stacks {
        let (Some(inner), Some((i, site))) = (inner_of(&s.frames), site_of(&s.frames)) else {
            continue;
        };
        let key = format!("{}\0{}", site.name, site.file);
        let e = m
            .entry(key)
            .or_insert((0.0, i64::MIN, String::new(), vec![]));
        e.0 += s.value as f64;
        if s.value > e.1 {
            e.1 = s.value;
            e.2 = site.label();
            // From the inner frame, through the site, and a few of its callers.
            e.3 = s.frames[inner..]
                .iter()
                .take(STACK_FRAMES.max(i - inner + 3))
                .map(Frame::label)
                .collect();
        }
    }
    m
}

/// The sites that grew most from `before` to `after` (bytes), largest first; only growth.
pub fn growth(before: &[Stack], after: &[Stack], top: usize) -> Vec<Site> {
    let b = by_site(before);
    let mut out: Vec<Site> = by_site(after)
        .into_iter()
        .map(|(key, (v, _, site, stack))| {
            let grew = v - b.get(&key).map_or(0.0, |x| x.0);
            Site {
                site,
                value: grew,
                stack,
            }
        })
        .filter(|s| s.value > 0.0)
        .collect();
    sort_top(&mut out, top);
    out
}

/// The sites with the largest share of the samples, largest first.
pub fn hot(stacks: &[Stack], top: usize) -> Vec<Site> {
    let total: f64 = stacks.iter().map(|s| s.value as f64).sum();
    if total <= 0.0 {
        return vec![];
    }
    let mut out: Vec<Site> = by_site(stacks)
        .into_iter()
        .map(|(_, (v, _, site, stack))| Site {
            site,
            value: v / total,
            stack,
        })
        .collect();
    sort_top(&mut out, top);
    out
}

fn sort_top(v: &mut Vec<Site>, top: usize) {
    v.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then_with(|| a.site.cmp(&b.site))
    });
    v.truncate(top);
}

pub fn total(stacks: &[Stack]) -> f64 {
    stacks.iter().map(|s| s.value as f64).sum()
}

/// Reads `profiles/index.json`; a run without profiles (older runs, the operator) has none.
pub fn read_index(dir: &Path) -> Result<Vec<Taken>, String> {
    match std::fs::read(dir.join(INDEX)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{INDEX}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(format!("{INDEX}: {e}")),
    }
}

/// What the profiles of a run directory say about each node that has any.
pub fn for_run(dir: &Path, nodes: &[String]) -> Result<Vec<NodeAttribution>, String> {
    let index = read_index(dir)?;
    if index.is_empty() {
        return Ok(vec![]);
    }
    let mut sym = Symbolizer::default();
    let mut load = |t: &Taken| -> Result<(Vec<Stack>, f64), String> {
        let f = t.file.as_deref().ok_or_else(|| {
            format!(
                "{:?} profile: {}",
                t.kind,
                t.error.as_deref().unwrap_or("not taken")
            )
        })?;
        let bytes = std::fs::read(dir.join(DIR).join(f)).map_err(|e| format!("{f}: {e}"))?;
        parse(&bytes, &mut sym)
            .map(|s| split_profiler(&s))
            .map_err(|e| format!("{f}: {e}"))
    };
    let mut out = vec![];
    for node in nodes {
        let latest = |k: Kind| index.iter().rev().find(|t| t.node == *node && t.kind == k);
        let (warm, end, cpu) = (
            latest(Kind::HeapWarmup),
            latest(Kind::HeapEnd),
            latest(Kind::CpuEnd),
        );
        if warm.is_none() && end.is_none() && cpu.is_none() {
            continue;
        }
        let mut a = NodeAttribution {
            node: node.clone(),
            ..Default::default()
        };
        let warm = warm.map(|t| (t, load(t)));
        let end = end.map(|t| (t, load(t)));
        if let Some((_, Ok((s, _)))) = &warm {
            a.heap_warmup_bytes = Some(total(s));
        }
        if let Some((_, Ok((s, profiler)))) = &end {
            a.heap_end_bytes = Some(total(s));
            a.heap_profiler_bytes = Some(*profiler);
        }
        match (&warm, &end) {
            (Some((w, Ok((before, _)))), Some((e, Ok((after, _))))) if w.life == e.life => {
                a.heap_growth = growth(before, after, TOP);
            }
            (Some((w, Ok(_))), Some((e, Ok((after, _))))) => {
                a.notes.push(format!(
                    "restarted between the heap profiles (process {} at the warm-up's end, {} at \
                     the end): growth is the end profile's heap since its own start",
                    w.life, e.life
                ));
                a.heap_growth = growth(&[], after, TOP);
            }
            (w, e) => {
                for (what, x) in [("warm-up", w), ("end", e)] {
                    match x {
                        None => a.notes.push(format!("no heap profile at the {what}")),
                        Some((_, Err(err))) => a.notes.push(err.clone()),
                        Some((_, Ok(_))) => {}
                    }
                }
            }
        }
        match cpu.map(|t| (t, load(t))) {
            Some((_, Ok((s, _)))) => a.cpu = hot(&s, TOP),
            Some((_, Err(e))) => a.notes.push(e),
            None => a.notes.push("no CPU profile".into()),
        }
        out.push(a);
    }
    let problems = sym.problems();
    for a in &mut out {
        a.notes.extend(problems.iter().cloned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
