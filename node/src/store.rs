//! Durable block store: block encodings in append-only segment files, everything else in redb
//! (pure Rust, ACID, copy-on-write B-trees; ~10 s to build, where rocksdb takes ~10 min here and
//! sled is unmaintained).
//!
//! Why the split: redb copies every page a transaction touches, so 16 KiB values written into its
//! B-tree cost 4.2x their size in writes and most of a syncing node's CPU (docs/benchmarks.md).
//! Block bytes are written once and never change, so they go to plain files; redb keeps what is
//! looked up and must move atomically with the head.
//!
//! Layout, for a store at `chain.redb`:
//! - `chain.segments/00000000.seg`, `00000001.seg`, …: records, each a block's postcard encoding
//!   (the bytes the sync protocol sends) prefixed by its length as postcard writes it. A run of
//!   records is therefore exactly the body of a blocks reply after its count, and serving a range
//!   is one read. A new segment starts at a batch boundary once the current one passes
//!   `segment_bytes` (256 MiB).
//! - redb `locations`: height → (segment, offset of the block bytes, length);
//!   `hashes`: height → block hash (GetBlockHashes without reading blocks);
//!   `hash_index`: block hash → height;
//!   `meta`: `genesis` (hash), `head` (height, LE u64), `format` (u32, 2).
//!
//! A batch is one segment append (fsynced) and then one redb transaction that records the
//! locations and moves the head (`Durability::Immediate`). A crash before the transaction leaves
//! records no index names: on open, everything past the head's record is truncated (and later
//! segments removed), so the store always reopens as a consistent prefix whose head is its last
//! block. Format 1 stores (blocks inside redb) are migrated on open.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;

use bytes::Bytes;

use crate::chain::{Block, ChainSpec, H256, Header, Sig, VerifiedBlock, VerifyError};
use crate::wire;

/// Format 1's table of encoded blocks, read only to migrate.
const BLOCKS_V1: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// (segment, offset of the block's bytes, their length).
const LOCATIONS: TableDefinition<u64, (u32, u64, u32)> = TableDefinition::new("locations");
const HASHES: TableDefinition<u64, [u8; 32]> = TableDefinition::new("hashes");
const HASH_INDEX: TableDefinition<[u8; 32], u64> = TableDefinition::new("hash_index");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const FORMAT_VERSION: u32 = 2;

/// A segment is closed at the first batch boundary past this size.
pub const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
/// Written segment data stays in the page cache for this long behind the writer, so peers asking
/// for recent blocks read memory; older data is dropped from the cache once it is synced.
///
/// Why drop it: a bulk sync writes gigabytes that nobody reads soon. Left in the cache, every new
/// page comes from memory the guest has not touched yet, which on VMs with lazily backed memory
/// (Firecracker, free-page reporting) costs a host fault per page: buffered writes here ran at
/// 380 MB/s into fresh cache and 2–2.5 GB/s when written pages were dropped behind the writer
/// (docs/benchmarks.md, S1). It also keeps a syncing pod's page cache, which counts against its
/// cgroup memory, from growing with the chain.
const HOT_TAIL_BYTES: u64 = 32 * 1024 * 1024;
/// Most segment files kept open for reading at once (old segments are rarely read; a reader
/// reopens one it needs).
const READ_HANDLES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0} is in use by another process (is a syncnode already running on it?)")]
    Locked(PathBuf),
    #[error("store {0} does not exist or was never initialised")]
    NotInitialised(PathBuf),
    #[error(
        "store belongs to another network: its genesis is {stored}, this network's is {expected}"
    )]
    GenesisMismatch { stored: H256, expected: H256 },
    #[error(
        "store format {0} is not supported (this build reads format {FORMAT_VERSION} and migrates format 1)"
    )]
    Format(u32),
    #[error("batch does not extend the head: expected height {expected}, got {got}")]
    NotContiguous { expected: u64, got: u64 },
    #[error("block {height} does not link to the stored block below it")]
    Unlinked { height: u64 },
    #[error("block {height} differs from the stored block at that height")]
    Conflict { height: u64 },
    #[error("store is inconsistent: {0}")]
    Corrupt(String),
    #[error("stored block at height {height} does not verify: {err}")]
    Invalid { height: u64, err: VerifyError },
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("segment file {path}: {err}")]
    Segment { path: PathBuf, err: std::io::Error },
    #[error("decoding a stored block: {0}")]
    Decode(#[from] postcard::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The last committed block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Head {
    pub height: u64,
    pub hash: H256,
    pub header: Header,
    #[serde(skip)]
    pub signature: Sig,
}

/// Where a block's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    segment: u32,
    /// Offset of the block's bytes (its length prefix comes just before).
    offset: u64,
    len: u32,
}

impl Location {
    fn from_value((segment, offset, len): (u32, u64, u32)) -> Self {
        Location {
            segment,
            offset,
            len,
        }
    }
    /// Where the record (length prefix and bytes) starts.
    fn record_start(&self) -> u64 {
        self.offset - prefix_len(self.len as usize) as u64
    }
    fn end(&self) -> u64 {
        self.offset + self.len as u64
    }
}

fn prefix_len(len: usize) -> usize {
    let mut v = Vec::with_capacity(10);
    wire::put_len(&mut v, len);
    v.len()
}

/// Stored records of a run of blocks, planned by [`Store::records_range`] and read by
/// [`Store::read_records`].
#[derive(Clone, Debug, Default)]
pub struct RecordRange {
    /// Blocks in the run.
    pub count: usize,
    /// Bytes of the records (length prefixes included).
    pub bytes: usize,
    /// Contiguous pieces: (segment, start, length).
    spans: Vec<(u32, u64, u64)>,
}

/// The segment being appended to; the mutex around it also serialises writers, so the contiguity
/// check and the commit agree.
struct Writer {
    head: Head,
    segment: u32,
    file: File,
    /// Its length, which is also where the next record goes.
    len: u64,
    /// Below this offset the segment's pages have been dropped from the page cache.
    dropped: u64,
}

pub struct Store {
    db: Database,
    path: PathBuf,
    segments: PathBuf,
    segment_bytes: u64,
    genesis: H256,
    writer: Mutex<Writer>,
    /// The head, also outside the writer's lock so reading it never waits for a commit.
    head: Mutex<Head>,
    readers: Mutex<BTreeMap<u32, Arc<File>>>,
    /// Bytes in segment files.
    segment_total: AtomicU64,
    /// Blocks committed by this process (any source: sync, broadcast, own production). Counted
    /// here so no insertion path can forget the metric.
    inserted: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// redb's page cache. Its default (1 GiB) grows the process by every block written until it is
/// full, which a leak detector cannot tell from a leak for days; the OS page cache holds the
/// file anyway.
pub const CACHE_BYTES: usize = 4 * 1024 * 1024;

fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// The segment directory of the store at `path` (`chain.redb` → `chain.segments`).
pub fn segments_dir(path: &Path) -> PathBuf {
    path.with_extension("segments")
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.seg"))
}

fn seg_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |err| StoreError::Segment {
        path: path.to_owned(),
        err,
    }
}

/// Segment ids present in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let mut ids = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(seg_err(dir)(e)),
    };
    for e in entries {
        let e = e.map_err(seg_err(dir))?;
        let name = e.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes a created or removed file's directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(seg_err(dir))
}

/// Writes all of `slices` at the file's current position (std has no stable `write_all_vectored`).
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Store {
    /// Opens the store at `path`, creating it with the network's genesis block if it does not exist.
    pub fn open_or_init(path: &Path, spec: &ChainSpec) -> Result<Store, StoreError> {
        Self::open_or_init_with(path, spec, SEGMENT_BYTES)
    }

    /// [`open_or_init`](Self::open_or_init) with another segment size (tests use small ones).
    pub fn open_or_init_with(
        path: &Path,
        spec: &ChainSpec,
        segment_bytes: u64,
    ) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(seg_err(dir))?;
        }
        let db = builder().create(path).map_err(|e| open_error(e, path))?;
        let segments = segments_dir(path);
        let txn = db.begin_write()?;
        let fresh = {
            let meta = txn.open_table(META)?;
            let stored = meta.get("genesis")?.map(|g| g.value().to_vec());
            match stored {
                Some(g) => {
                    let stored = H256(g.try_into().map_err(|_| corrupt("genesis hash length"))?);
                    if stored != spec.genesis_hash() {
                        return Err(StoreError::GenesisMismatch {
                            stored,
                            expected: spec.genesis_hash(),
                        });
                    }
                    false
                }
                None => true,
            }
        };
        if fresh {
            // Left over from an init that crashed before its commit, if anything.
            if segments.exists() {
                std::fs::remove_dir_all(&segments).map_err(seg_err(&segments))?;
            }
            std::fs::create_dir_all(&segments).map_err(seg_err(&segments))?;
            let genesis = spec.genesis();
            let hash = genesis.hash();
            let enc = postcard::to_stdvec(genesis)?;
            let seg0 = segment_path(&segments, 0);
            let mut f = File::create_new(&seg0).map_err(seg_err(&seg0))?;
            let mut rec = Vec::new();
            wire::put_len(&mut rec, enc.len());
            let offset = rec.len() as u64;
            rec.extend_from_slice(&enc);
            f.write_all(&rec)
                .and_then(|_| f.sync_data())
                .map_err(seg_err(&seg0))?;
            sync_dir(&segments)?;
            txn.open_table(LOCATIONS)?
                .insert(0, (0, offset, enc.len() as u32))?;
            txn.open_table(HASHES)?.insert(0, hash.0)?;
            txn.open_table(HASH_INDEX)?.insert(hash.0, 0)?;
            let mut meta = txn.open_table(META)?;
            meta.insert("genesis", hash.0.as_slice())?;
            meta.insert("head", 0u64.to_le_bytes().as_slice())?;
            meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())?;
        }
        txn.commit()?;
        Self::from_db(db, path, segment_bytes)
    }

    /// Opens an existing store without knowing its network (for `syncnode inspect`).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotInitialised(path.to_owned()));
        }
        let db = builder().open(path).map_err(|e| open_error(e, path))?;
        Self::from_db(db, path, SEGMENT_BYTES)
    }

    fn from_db(db: Database, path: &Path, segment_bytes: u64) -> Result<Store, StoreError> {
        let segments = segments_dir(path);
        let mut format = read_format(&db, path)?;
        if format == 1 {
            migrate_v1(&db, &segments)?;
            format = read_format(&db, path)?;
        }
        if format != FORMAT_VERSION {
            return Err(StoreError::Format(format));
        }
        let (genesis, head_height, head_loc) = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let get = |k: &str| -> Result<Vec<u8>, StoreError> {
                Ok(meta
                    .get(k)?
                    .ok_or_else(|| corrupt(&format!("meta.{k} missing")))?
                    .value()
                    .to_vec())
            };
            let genesis = H256(get("genesis")?.try_into().map_err(|_| corrupt("genesis"))?);
            let head = u64::from_le_bytes(get("head")?.try_into().map_err(|_| corrupt("head"))?);
            // The head must be the last block: both move in the same transaction.
            let locations = txn.open_table(LOCATIONS)?;
            let last = locations
                .last()?
                .map(|(k, v)| (k.value(), Location::from_value(v.value())));
            let Some((last, loc)) = last.filter(|(h, _)| *h == head) else {
                return Err(corrupt(&format!(
                    "head is {head} but the last block is {:?}",
                    last.map(|l| l.0)
                )));
            };
            (genesis, last, loc)
        };
        let (file, total) = recover_segments(&segments, head_loc)?;
        let placeholder = Head {
            height: 0,
            hash: H256::ZERO,
            header: Header {
                height: 0,
                parent_hash: H256::ZERO,
                timestamp_ms: 0,
                payload_hash: H256::ZERO,
                payload_len: 0,
                producer: H256::ZERO,
                ida_root: None,
            },
            signature: Sig([0; 64]),
        };
        let store = Store {
            db,
            path: path.to_owned(),
            segments,
            segment_bytes,
            genesis,
            writer: Mutex::new(Writer {
                head: placeholder.clone(),
                segment: head_loc.segment,
                file,
                len: head_loc.end(),
                dropped: 0,
            }),
            head: Mutex::new(placeholder),
            readers: Mutex::new(BTreeMap::new()),
            segment_total: AtomicU64::new(total),
            inserted: Default::default(),
        };
        let block = store
            .block(head_height)?
            .ok_or_else(|| corrupt("head block missing"))?;
        let head = Head {
            height: head_height,
            hash: block.hash(),
            header: block.header,
            signature: block.signature,
        };
        store.writer.lock().unwrap().head = head.clone();
        *store.head.lock().unwrap() = head;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of the segment files.
    pub fn segments_path(&self) -> &Path {
        &self.segments
    }

    pub fn genesis_hash(&self) -> H256 {
        self.genesis
    }

    pub fn head(&self) -> Head {
        self.head.lock().unwrap().clone()
    }

    /// Appends a batch of verified blocks on top of the head, atomically: either every block and the
    /// new head are committed, or nothing is.
    pub fn insert_batch(&self, batch: &[VerifiedBlock]) -> Result<Head, StoreError> {
        self.insert_new(batch).map(|(head, _)| head)
    }

    /// Commits the blocks of `batch` above the head; returns the new head and how many blocks were
    /// new. Blocks at or below the head must be the stored ones (same hash) and are skipped:
    /// broadcast and sync write the same chain, and a block broadcast delivered while a sync batch
    /// covering it was on its way to the store is not the serving peer's fault.
    pub fn insert_new(&self, batch: &[VerifiedBlock]) -> Result<(Head, usize), StoreError> {
        let mut w = self.writer.lock().unwrap();
        let mut skip = 0;
        if batch
            .first()
            .is_some_and(|b| b.block().header.height <= w.head.height)
        {
            let rtx = self.db.begin_read()?;
            let hashes = rtx.open_table(HASHES)?;
            for vb in batch {
                let height = vb.block().header.height;
                if height > w.head.height {
                    break;
                }
                let stored = hashes.get(height)?.map(|g| g.value());
                if stored != Some(vb.hash().0) {
                    return Err(StoreError::Conflict { height });
                }
                skip += 1;
            }
        }
        let batch = &batch[skip..];
        let Some(last) = batch.last() else {
            return Ok((w.head.clone(), 0));
        };
        let mut parent = w.head.hash;
        for (i, vb) in batch.iter().enumerate() {
            let h = &vb.block().header;
            let expected = w.head.height + 1 + i as u64;
            if h.height != expected {
                return Err(StoreError::NotContiguous {
                    expected,
                    got: h.height,
                });
            }
            if h.parent_hash != parent {
                return Err(StoreError::Unlinked { height: h.height });
            }
            parent = vb.hash();
        }
        let start = w.len;
        let locations = self.append(&mut w, batch)?;
        // Crash test: die between the segment append and the index commit.
        fail::fail_point!("store-before-index", |_| std::process::abort());
        let committed = self.index(batch, &locations, last.block().header.height);
        // Crash test: die after the commit, before anyone hears of it.
        fail::fail_point!("store-after-index", |_| std::process::abort());
        if let Err(e) = committed {
            // Nothing names the records just written: take them back, so the file stays what
            // the index says (the next open would truncate them anyway).
            let _ = w.file.set_len(start);
            self.segment_total
                .fetch_sub(w.len - start, Ordering::Relaxed);
            w.len = start;
            return Err(e);
        }
        self.inserted
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let head = Head {
            height: last.block().header.height,
            hash: last.hash(),
            header: last.block().header.clone(),
            signature: last.block().signature,
        };
        w.head = head.clone();
        *self.head.lock().unwrap() = head.clone();
        Ok((head, batch.len()))
    }

    /// Writes the batch's records at the end of the current segment (starting a new one first
    /// if it is full) and syncs them; returns where each block went.
    fn append(&self, w: &mut Writer, batch: &[VerifiedBlock]) -> Result<Vec<Location>, StoreError> {
        if w.len >= self.segment_bytes {
            let next = w.segment + 1;
            let p = segment_path(&self.segments, next);
            let file = File::create_new(&p).map_err(seg_err(&p))?;
            sync_dir(&self.segments)?;
            w.file = file;
            w.segment = next;
            w.len = 0;
            w.dropped = 0;
        }
        let encoded: Vec<_> = batch.iter().map(|vb| vb.encoded()).collect();
        let mut prefixes = Vec::with_capacity(batch.len() * 3);
        let mut locations = Vec::with_capacity(batch.len());
        let mut at = w.len;
        for e in &encoded {
            let before = prefixes.len();
            wire::put_len(&mut prefixes, e.len());
            at += (prefixes.len() - before) as u64;
            locations.push(Location {
                segment: w.segment,
                offset: at,
                len: u32::try_from(e.len()).map_err(|_| corrupt("block larger than 4 GiB"))?,
            });
            at += e.len() as u64;
        }
        let mut slices = Vec::with_capacity(batch.len() * 2);
        let mut p = 0;
        for e in &encoded {
            let n = prefix_len(e.len());
            slices.push(IoSlice::new(&prefixes[p..p + n]));
            slices.push(IoSlice::new(e));
            p += n;
        }
        let path = segment_path(&self.segments, w.segment);
        // Crash test: die with half of the batch's bytes written (a torn append).
        fail::fail_point!("store-torn-append", |_| {
            let half: usize = slices.iter().map(|s| s.len()).sum::<usize>() / 2;
            let mut left = half;
            for s in &slices {
                let n = s.len().min(left);
                let _ = w.file.write_all(&s[..n]);
                left -= n;
            }
            let _ = w.file.sync_data();
            std::process::abort()
        });
        let written = write_all_vectored(&mut w.file, &mut slices).and_then(|_| w.file.sync_data());
        if let Err(err) = written {
            let _ = w.file.set_len(w.len);
            return Err(StoreError::Segment { path, err });
        }
        self.segment_total.fetch_add(at - w.len, Ordering::Relaxed);
        w.len = at;
        drop_behind(w);
        Ok(locations)
    }

    /// One transaction: the batch's locations and hashes, and the new head.
    fn index(
        &self,
        batch: &[VerifiedBlock],
        locations: &[Location],
        head: u64,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut locs = txn.open_table(LOCATIONS)?;
            let mut hashes = txn.open_table(HASHES)?;
            let mut index = txn.open_table(HASH_INDEX)?;
            for (vb, l) in batch.iter().zip(locations) {
                let height = vb.block().header.height;
                locs.insert(height, (l.segment, l.offset, l.len))?;
                hashes.insert(height, vb.hash().0)?;
                index.insert(vb.hash().0, height)?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert("head", head.to_le_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A read handle on segment `id` (kept open, up to `READ_HANDLES`).
    fn reader(&self, id: u32) -> Result<Arc<File>, StoreError> {
        let mut readers = self.readers.lock().unwrap();
        if let Some(f) = readers.get(&id) {
            return Ok(f.clone());
        }
        let p = segment_path(&self.segments, id);
        let f = Arc::new(File::open(&p).map_err(seg_err(&p))?);
        if readers.len() >= READ_HANDLES {
            readers.pop_first();
        }
        readers.insert(id, f.clone());
        Ok(f)
    }

    fn read_at(&self, segment: u32, offset: u64, out: &mut [u8]) -> Result<(), StoreError> {
        let f = self.reader(segment)?;
        f.read_exact_at(out, offset)
            .map_err(seg_err(&segment_path(&self.segments, segment)))
    }

    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        Ok(match self.block_bytes(height)? {
            Some(bytes) => Some(Block::decode(&Bytes::from(bytes))?),
            None => None,
        })
    }

    /// The stored encoding of the block at `height`, as sent on the wire.
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let loc = {
            let txn = self.db.begin_read()?;
            let locs = txn.open_table(LOCATIONS)?;
            match locs.get(height)? {
                Some(v) => Location::from_value(v.value()),
                None => return Ok(None),
            }
        };
        let mut out = vec![0u8; loc.len as usize];
        self.read_at(loc.segment, loc.offset, &mut out)?;
        Ok(Some(out))
    }

    /// Plans the records of blocks `from..from+count`, stopping before the blocks' total would
    /// pass `max_bytes` (but always at least one block if `from` exists).
    pub fn records_range(
        &self,
        from: u64,
        count: u32,
        max_bytes: usize,
    ) -> Result<RecordRange, StoreError> {
        let txn = self.db.begin_read()?;
        let locs = txn.open_table(LOCATIONS)?;
        let mut r = RecordRange::default();
        let mut total = 0usize;
        for entry in locs.range(from..from.saturating_add(count as u64))? {
            let l = Location::from_value(entry?.1.value());
            if r.count > 0 && total + l.len as usize > max_bytes {
                break;
            }
            total += l.len as usize;
            r.count += 1;
            let start = l.record_start();
            r.bytes += (l.end() - start) as usize;
            match r.spans.last_mut() {
                Some((seg, s, len)) if *seg == l.segment && *s + *len == start => {
                    *len = l.end() - *s
                }
                _ => r.spans.push((l.segment, start, l.end() - start)),
            }
        }
        Ok(r)
    }

    /// Appends the planned records to `out` (one read per contiguous piece).
    pub fn read_records(&self, range: &RecordRange, out: &mut Vec<u8>) -> Result<(), StoreError> {
        out.reserve(range.bytes);
        for &(seg, start, len) in &range.spans {
            let at = out.len();
            out.resize(at + len as usize, 0);
            self.read_at(seg, start, &mut out[at..])?;
        }
        Ok(())
    }

    /// Stored encodings of blocks `from..from+count`, stopping before the total would pass
    /// `max_bytes` (but always at least one block if `from` exists). Each is a view of one read.
    pub fn block_bytes_range(
        &self,
        from: u64,
        count: u32,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let range = self.records_range(from, count, max_bytes)?;
        let mut buf = Vec::new();
        self.read_records(&range, &mut buf)?;
        split_records(Bytes::from(buf), range.count)
    }

    pub fn height_of(&self, hash: &H256) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(HASH_INDEX)?;
        Ok(index.get(hash.0)?.map(|v| v.value()))
    }

    pub fn block_by_hash(&self, hash: &H256) -> Result<Option<Block>, StoreError> {
        match self.height_of(hash)? {
            Some(h) => self.block(h),
            None => Ok(None),
        }
    }

    /// Hashes of blocks `from..from+count` that exist, in order.
    pub fn hashes(&self, from: u64, count: u64) -> Result<Vec<H256>, StoreError> {
        let txn = self.db.begin_read()?;
        let hashes = txn.open_table(HASHES)?;
        let end = from.saturating_add(count);
        hashes
            .range(from..end)?
            .map(|r| Ok(H256(r?.1.value())))
            .collect()
    }

    /// Blocks committed since this store was opened.
    pub fn inserted_total(&self) -> u64 {
        self.inserted.load(Ordering::Relaxed)
    }

    /// Size of the store on disk in bytes: the database file and the segments.
    pub fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
            + self.segment_total.load(Ordering::Relaxed)
    }

    /// Segment files kept open for reading (capped at `READ_HANDLES`).
    pub fn open_segment_handles(&self) -> usize {
        self.readers.lock().unwrap().len()
    }

    /// Walks the whole chain: every block verifies against its parent, every record's length prefix
    /// and place agree with the index, the indexes agree with the blocks, and nothing follows the
    /// head's record. Returns the number of blocks checked (excluding genesis). Meant for a store
    /// nobody is writing to (`syncnode inspect --check`, a stopped node): a commit in flight reads
    /// as data after the head.
    pub fn check(&self, spec: &ChainSpec) -> Result<u64, StoreError> {
        if spec.genesis_hash() != self.genesis {
            return Err(StoreError::GenesisMismatch {
                stored: self.genesis,
                expected: spec.genesis_hash(),
            });
        }
        let head = self.head();
        let txn = self.db.begin_read()?;
        let locs = txn.open_table(LOCATIONS)?;
        let hashes = txn.open_table(HASHES)?;
        let index = txn.open_table(HASH_INDEX)?;
        if locs.len()? != head.height + 1 || hashes.len()? != head.height + 1 {
            return Err(corrupt("block count does not match head"));
        }
        // Records must follow each other with no gap, segment by segment.
        let mut expected_at: Option<(u32, u64)> = None;
        let mut parent = spec.genesis().header.clone();
        let mut from = 0u64;
        while from <= head.height {
            let range = self.records_range(from, 1024, usize::MAX)?;
            let mut buf = Vec::new();
            self.read_records(&range, &mut buf)?;
            let blocks = split_records(Bytes::from(buf), range.count)?;
            for (i, raw) in blocks.into_iter().enumerate() {
                let height = from + i as u64;
                let loc = Location::from_value(
                    locs.get(height)?
                        .ok_or_else(|| corrupt(&format!("no location for {height}")))?
                        .value(),
                );
                let contiguous = match expected_at {
                    None => loc.segment == 0 && loc.record_start() == 0,
                    Some((seg, end)) => {
                        (loc.segment == seg && loc.record_start() == end)
                            || (loc.segment == seg + 1 && loc.record_start() == 0)
                    }
                };
                if !contiguous || raw.len() != loc.len as usize {
                    return Err(corrupt(&format!("record of block {height} is misplaced")));
                }
                expected_at = Some((loc.segment, loc.end()));
                let block = Block::decode(&raw)?;
                let hash = if height == 0 {
                    if block != *spec.genesis() {
                        return Err(corrupt("block 0 is not this network's genesis"));
                    }
                    block.hash()
                } else {
                    spec.verify(block.clone(), &parent)
                        .map_err(|err| StoreError::Invalid { height, err })?
                        .hash()
                };
                if hashes.get(height)?.map(|h| h.value()) != Some(hash.0)
                    || index.get(hash.0)?.map(|h| h.value()) != Some(height)
                {
                    return Err(corrupt(&format!("index disagrees at height {height}")));
                }
                parent = block.header;
            }
            from += range.count.max(1) as u64;
        }
        if parent.height != head.height || parent.hash() != head.hash {
            return Err(corrupt("head does not match the last block"));
        }
        // Nothing after the head's record: no longer file, no later segment.
        let (seg, end) = expected_at.expect("genesis is always there");
        let p = segment_path(&self.segments, seg);
        let len = std::fs::metadata(&p).map_err(seg_err(&p))?.len();
        let later = list_segments(&self.segments)?
            .into_iter()
            .any(|id| id > seg);
        if len != end || later {
            return Err(corrupt(&format!(
                "segment data after the head (segment {seg} is {len} bytes, the head ends at {end})"
            )));
        }
        Ok(head.height)
    }
}

/// Drops synced segment data more than `HOT_TAIL_BYTES` behind the end from the page cache. Only
/// advice: a failure changes nothing but speed, so it is ignored.
fn drop_behind(w: &mut Writer) {
    let upto = w.len.saturating_sub(HOT_TAIL_BYTES);
    if upto > w.dropped {
        let len = std::num::NonZeroU64::new(upto - w.dropped);
        let _ = rustix::fs::fadvise(&w.file, w.dropped, len, rustix::fs::Advice::DontNeed);
        w.dropped = upto;
    }
}

/// Splits `count` records (length prefix, bytes) into views of `buf`.
fn split_records(buf: Bytes, count: usize) -> Result<Vec<Bytes>, StoreError> {
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        let (len, rest) = wire::take_len(&buf[at..])?;
        let start = buf.len() - rest.len();
        if rest.len() < len {
            return Err(corrupt("record runs past its segment"));
        }
        out.push(buf.slice(start..start + len));
        at = start + len;
    }
    Ok(out)
}

fn read_format(db: &Database, path: &Path) -> Result<u32, StoreError> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(StoreError::NotInitialised(path.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    let v = meta
        .get("format")?
        .ok_or_else(|| corrupt("meta.format missing"))?
        .value()
        .to_vec();
    Ok(u32::from_le_bytes(
        v.try_into().map_err(|_| corrupt("format"))?,
    ))
}

/// Brings the segments in line with the index after a crash: the head's segment is cut to the end
/// of the head's record, and later segments (begun by a batch that never committed) are removed.
/// Returns the head segment, open for appending, and the bytes in all segments.
fn recover_segments(dir: &Path, head: Location) -> Result<(File, u64), StoreError> {
    let mut total = 0;
    let mut changed = false;
    for id in list_segments(dir)? {
        let p = segment_path(dir, id);
        if id > head.segment {
            std::fs::remove_file(&p).map_err(seg_err(&p))?;
            tracing::warn!(segment = %p.display(), "removed a segment no committed block is in");
            changed = true;
        } else if id < head.segment {
            total += std::fs::metadata(&p).map_err(seg_err(&p))?.len();
        }
    }
    let p = segment_path(dir, head.segment);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .map_err(seg_err(&p))?;
    let len = file.metadata().map_err(seg_err(&p))?.len();
    if len < head.end() {
        return Err(corrupt(&format!(
            "segment {} is {len} bytes but the head's block ends at {}: committed data is missing",
            p.display(),
            head.end()
        )));
    }
    if len > head.end() {
        // A torn or uncommitted append.
        file.set_len(head.end())
            .and_then(|_| file.sync_all())
            .map_err(seg_err(&p))?;
        tracing::warn!(
            segment = %p.display(),
            bytes = len - head.end(),
            "truncated segment data past the head (an append that never committed)"
        );
    }
    if changed {
        sync_dir(dir)?;
    }
    let mut file = file;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(head.end())).map_err(seg_err(&p))?;
    Ok((file, total + head.end()))
}

/// Format 1 kept every block inside redb. Copies them into segments, then, in one transaction,
/// records their locations, drops the old table and sets format 2. A crash before that commit
/// leaves format 1 and the migration starts over.
fn migrate_v1(db: &Database, dir: &Path) -> Result<(), StoreError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(seg_err(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(seg_err(dir))?;
    let txn = db.begin_write()?;
    let mut n = 0u64;
    {
        let blocks = txn.open_table(BLOCKS_V1)?;
        let mut locs = txn.open_table(LOCATIONS)?;
        let mut segment = 0u32;
        let p = segment_path(dir, segment);
        let mut file = std::io::BufWriter::new(File::create_new(&p).map_err(seg_err(&p))?);
        let mut len = 0u64;
        let mut prefix = Vec::with_capacity(10);
        for entry in blocks.range(0..)? {
            let (k, v) = entry?;
            let bytes = v.value();
            if len >= SEGMENT_BYTES {
                let p = segment_path(dir, segment);
                file.into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_data())
                    .map_err(seg_err(&p))?;
                segment += 1;
                let p = segment_path(dir, segment);
                file = std::io::BufWriter::new(File::create_new(&p).map_err(seg_err(&p))?);
                len = 0;
            }
            prefix.clear();
            wire::put_len(&mut prefix, bytes.len());
            let p = segment_path(dir, segment);
            file.write_all(&prefix)
                .and_then(|_| file.write_all(bytes))
                .map_err(seg_err(&p))?;
            let offset = len + prefix.len() as u64;
            locs.insert(k.value(), (segment, offset, bytes.len() as u32))?;
            len = offset + bytes.len() as u64;
            n += 1;
        }
        let p = segment_path(dir, segment);
        file.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_data())
            .map_err(seg_err(&p))?;
        sync_dir(dir)?;
    }
    txn.delete_table(BLOCKS_V1)?;
    txn.open_table(META)?
        .insert("format", FORMAT_VERSION.to_le_bytes().as_slice())?;
    txn.commit()?;
    tracing::info!(
        blocks = n,
        "migrated the store from format 1 (blocks in redb) to format 2 (segments)"
    );
    Ok(())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn open_error(e: redb::DatabaseError, path: &Path) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_owned()),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncnet_proto::chain::testkit::{key, make_chain, spec_for};

    #[test]
    fn batch_insert_then_reopen_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 300, 512);
        {
            let store = Store::open_or_init(&path, &spec).unwrap();
            assert_eq!(store.head().height, 0);
            assert_eq!(store.head().hash, spec.genesis_hash());
            let v = spec
                .verify_chain(&spec.genesis().header, chain[..100].to_vec())
                .unwrap();
            store.insert_batch(&v).unwrap();
            let v = spec
                .verify_chain(&chain[99].header, chain[100..].to_vec())
                .unwrap();
            let head = store.insert_batch(&v).unwrap();
            assert_eq!(head.height, 300);
        }
        let store = Store::open_or_init(&path, &spec).unwrap();
        assert_eq!(store.head().height, 300);
        assert_eq!(store.head().hash, chain[299].hash());
        assert_eq!(store.block(150).unwrap().unwrap(), chain[149]);
        assert_eq!(store.height_of(&chain[41].hash()).unwrap(), Some(42));
        assert_eq!(
            store.block_by_hash(&chain[9].hash()).unwrap().unwrap(),
            chain[9]
        );
        assert_eq!(store.block(301).unwrap(), None);
        let hashes = store.hashes(298, 10).unwrap();
        assert_eq!(
            hashes,
            vec![chain[297].hash(), chain[298].hash(), chain[299].hash()]
        );
        assert_eq!(store.check(&spec).unwrap(), 300);
        assert!(store.size_bytes() > 300 * 512);
        assert_eq!(store.head().signature, chain[299].signature);
        // Range reads stop at the byte cap but always return at least one block.
        let enc = |b: &Block| postcard::to_stdvec(b).unwrap();
        let one = enc(&chain[9]).len();
        let r = store.block_bytes_range(10, 50, one * 3).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].as_ref(), enc(&chain[9]).as_slice());
        assert_eq!(store.block_bytes_range(10, 50, 1).unwrap().len(), 1);
        assert_eq!(store.block_bytes_range(299, 50, 1 << 20).unwrap().len(), 2);
        assert!(store.block_bytes_range(301, 5, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn non_contiguous_batch_is_rejected_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 20, 64);
        let store = Store::open_or_init(&path, &spec).unwrap();
        // Verified, but against block 10, not the store's head (genesis).
        let v = spec
            .verify_chain(&chain[9].header, chain[10..].to_vec())
            .unwrap();
        let err = store.insert_batch(&v).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NotContiguous {
                    expected: 1,
                    got: 11
                }
            ),
            "{err}"
        );
        assert_eq!(store.head().height, 0);
        assert_eq!(store.block(11).unwrap(), None);
    }

    /// The race behind the false `misplaced` penalty: broadcast commits the next block while a
    /// sync batch that starts at the same height is on its way to the store. The batch must
    /// commit the rest, not fail as non-contiguous (which blamed the peer that served it).
    #[test]
    fn batch_overlapping_blocks_broadcast_committed_inserts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 10, 64);
        let store = Store::open_or_init(&dir.path().join("chain.redb"), &spec).unwrap();
        let genesis = store.head().header;
        let batch = spec.verify_chain(&genesis, chain.clone()).unwrap();
        // Broadcast delivered blocks 1 and 2 first.
        store.insert_batch(&batch[..2]).unwrap();
        let (head, new) = store.insert_new(&batch).unwrap();
        assert_eq!((head.height, new), (10, 8));
        assert_eq!(store.inserted_total(), 10);
        // Entirely below the head: nothing to do, nothing written.
        let (head, new) = store.insert_new(&batch[3..5]).unwrap();
        assert_eq!((head.height, new), (10, 0));
        assert_eq!(store.check(&spec).unwrap(), 10);
    }

    #[test]
    fn batch_differing_from_a_stored_block_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1);
        let spec = spec_for(&k);
        let store = Store::open_or_init(&dir.path().join("chain.redb"), &spec).unwrap();
        let genesis = store.head().header;
        let ours = spec
            .verify_chain(&genesis, make_chain(&spec, &k, 4, 64))
            .unwrap();
        // Same producer, other payloads: a second chain of signed blocks (equivocation).
        let theirs = spec
            .verify_chain(&genesis, make_chain(&spec, &k, 6, 65))
            .unwrap();
        store.insert_batch(&ours).unwrap();
        let err = store.insert_new(&theirs).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { height: 1 }), "{err}");
        assert_eq!(store.head().height, 4);
        // Signed, at the next height, but its parent is not our head.
        let err = store.insert_new(&theirs[4..]).unwrap_err();
        assert!(matches!(err, StoreError::Unlinked { height: 5 }), "{err}");
        assert_eq!(store.head().height, 4);
    }

    fn verified(spec: &ChainSpec, parent: &Header, blocks: &[Block]) -> Vec<VerifiedBlock> {
        spec.verify_chain(parent, blocks.to_vec()).unwrap()
    }

    /// A crash between the segment append and the index commit leaves records nobody names, or
    /// half a record; a batch that had started a new segment leaves that file. The next open cuts
    /// all of it, the store verifies, and appending carries on where the head is.
    #[test]
    fn uncommitted_and_torn_appends_are_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 60, 700);
        let seg_dir = segments_dir(&path);
        {
            let store = Store::open_or_init_with(&path, &spec, 8 * 1024).unwrap();
            let all = verified(&spec, &spec.genesis().header, &chain[..30]);
            // Segments end at batch boundaries only.
            for batch in all.chunks(5) {
                store.insert_batch(batch).unwrap();
            }
        }
        let segs = list_segments(&seg_dir).unwrap();
        assert!(segs.len() > 2, "small segments roll: {segs:?}");
        let last = segment_path(&seg_dir, *segs.last().unwrap());
        let committed_len = std::fs::metadata(&last).unwrap().len();
        // An uncommitted record and half of another, then a segment begun by a lost batch.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        let enc = postcard::to_stdvec(&chain[30]).unwrap();
        let mut junk = Vec::new();
        wire::put_len(&mut junk, enc.len());
        junk.extend_from_slice(&enc);
        junk.extend_from_slice(&junk.clone()[..300]);
        f.write_all(&junk).unwrap();
        drop(f);
        std::fs::write(segment_path(&seg_dir, segs.last().unwrap() + 1), &junk).unwrap();

        let store = Store::open_or_init_with(&path, &spec, 8 * 1024).unwrap();
        assert_eq!(store.head().height, 30);
        assert_eq!(std::fs::metadata(&last).unwrap().len(), committed_len);
        assert_eq!(list_segments(&seg_dir).unwrap(), segs);
        assert_eq!(store.check(&spec).unwrap(), 30);
        store
            .insert_batch(&verified(&spec, &chain[29].header, &chain[30..]))
            .unwrap();
        assert_eq!(store.check(&spec).unwrap(), 60);
        assert_eq!(store.block(31).unwrap().unwrap(), chain[30]);
        // A range across segment boundaries comes back whole and in order.
        let r = store.block_bytes_range(5, 50, usize::MAX).unwrap();
        assert_eq!(r.len(), 50);
        for (i, b) in r.iter().enumerate() {
            assert_eq!(Block::decode(b).unwrap(), chain[4 + i]);
        }
        assert!(store.open_segment_handles() <= READ_HANDLES);
    }

    /// Data the index names but the segment lacks is not silently cut: the store refuses to open.
    #[test]
    fn a_segment_shorter_than_its_index_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 5, 100);
        {
            let store = Store::open_or_init(&path, &spec).unwrap();
            store
                .insert_batch(&verified(&spec, &spec.genesis().header, &chain))
                .unwrap();
        }
        let seg = segment_path(&segments_dir(&path), 0);
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let err = Store::open_or_init(&path, &spec).unwrap_err();
        assert!(
            err.to_string().contains("committed data is missing"),
            "{err}"
        );
    }

    /// `check` reads the segments: a flipped byte in a stored payload fails it.
    #[test]
    fn check_finds_a_corrupted_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 20, 100);
        let store = Store::open_or_init(&path, &spec).unwrap();
        store
            .insert_batch(&verified(&spec, &spec.genesis().header, &chain))
            .unwrap();
        assert_eq!(store.check(&spec).unwrap(), 20);
        let seg = segment_path(&segments_dir(&path), 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = bytes.len() - 500;
        bytes[at] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();
        let err = store.check(&spec).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    }

    /// A store written by the previous format (blocks inside redb) is migrated on open.
    #[test]
    fn format_1_stores_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 40, 300);
        {
            // What format 1 wrote.
            let db = builder().create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut blocks = txn.open_table(BLOCKS_V1).unwrap();
                let mut hashes = txn.open_table(HASHES).unwrap();
                let mut index = txn.open_table(HASH_INDEX).unwrap();
                for b in std::iter::once(spec.genesis()).chain(&chain) {
                    let h = b.header.height;
                    blocks
                        .insert(h, postcard::to_stdvec(b).unwrap().as_slice())
                        .unwrap();
                    hashes.insert(h, b.hash().0).unwrap();
                    index.insert(b.hash().0, h).unwrap();
                }
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("genesis", spec.genesis_hash().0.as_slice())
                    .unwrap();
                meta.insert("head", 40u64.to_le_bytes().as_slice()).unwrap();
                meta.insert("format", 1u32.to_le_bytes().as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open_or_init(&path, &spec).unwrap();
        assert_eq!(store.head().height, 40);
        assert_eq!(store.check(&spec).unwrap(), 40);
        assert_eq!(store.block(17).unwrap().unwrap(), chain[16]);
        drop(store);
        // Migrated once: the second open finds format 2.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.head().height, 40);
        assert_eq!(read_format(&store.db, &path).unwrap(), 2);
    }

    /// The serving fast path: a reply head plus the stored records is the frame that encoding
    /// the blocks would give.
    #[test]
    fn stored_records_make_the_encoded_reply() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1);
        let spec = spec_for(&k);
        let chain = make_chain(&spec, &k, 50, 200);
        let store = Store::open_or_init_with(&dir.path().join("chain.redb"), &spec, 4096).unwrap();
        for batch in verified(&spec, &spec.genesis().header, &chain).chunks(7) {
            store.insert_batch(batch).unwrap();
        }
        let range = store.records_range(3, 40, 30 * 300).unwrap();
        assert!(range.spans.len() > 1, "the range crosses segments");
        assert!(range.count > 1 && range.count < 40);
        let id = wire::ReqId(77);
        let mut frame = wire::blocks_reply_head(id, range.count, range.bytes, 1 << 20).unwrap();
        store.read_records(&range, &mut frame).unwrap();
        let blocks = store.block_bytes_range(3, 40, 30 * 300).unwrap();
        assert_eq!(blocks.len(), range.count);
        let msg = wire::Message::Response {
            id,
            resp: wire::Response::Blocks(blocks),
        };
        assert_eq!(frame, wire::encode(&msg, 1 << 20).unwrap());
    }

    #[test]
    fn store_of_another_network_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        drop(Store::open_or_init(&path, &spec_for(&key(1))).unwrap());
        let err = Store::open_or_init(&path, &spec_for(&key(2))).unwrap_err();
        assert!(matches!(err, StoreError::GenesisMismatch { .. }), "{err}");
    }

    #[test]
    fn second_open_reports_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let spec = spec_for(&key(1));
        let _first = Store::open_or_init(&path, &spec).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }

    #[test]
    fn missing_store_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open(&dir.path().join("nope.redb")).unwrap_err();
        assert!(matches!(err, StoreError::NotInitialised(_)), "{err}");
    }
}
