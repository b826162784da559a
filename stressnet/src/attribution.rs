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

/// A site and what it accounts for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub site: String,
    /// Heap: bytes grown (end minus warm-up). CPU: share of samples, 0–1.
    pub value: f64,
    /// The heaviest stack through the site, from its first frame outside the standard library
    /// (the site, or the dependency it called) towards the root.
    pub stack: Vec<String>,
}

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
mod tests {
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
                l.ends_with(exe.to_str().unwrap())
                    && l.split_whitespace().nth(2) == Some("00000000")
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
        assert!(leaf.file.ends_with("attribution.rs"), "{leaf:?}");
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
}
