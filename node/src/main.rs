//! `syncnode`: run a node, make keys and network configs, inspect a store.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use syncnet_node::chain::H256;
use syncnet_node::config::{LogFormat, NetworkConfig, NodeConfig, Overrides};
use syncnet_node::producer::{Producer, generate_chain};
use syncnet_node::store::Store;
use syncnet_node::{keys, node};
use tracing_subscriber::EnvFilter;

// jemalloc with its sampling heap profiler on, so `GET /debug/pprof/heap` can say which code holds
// memory (syncnet_node::profile, which holds the configuration and why).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = syncnet_node::profile::MALLOC_CONF;

#[derive(Parser)]
#[command(
    name = "syncnode",
    version,
    about = "syncnet node: signed chain, p2p sync, metrics"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node from a config file.
    Run(RunArgs),
    /// Generate an ed25519 key file (producer signing key or node identity).
    Keygen {
        /// Where to write the key (mode 0600). Refuses to overwrite without --force.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = KeyKind::Producer)]
        kind: KeyKind,
        #[arg(long)]
        force: bool,
    },
    /// Write a network config (network id, genesis, producer public key).
    Genesis {
        /// 1-32 characters of a-z, 0-9, '-'.
        #[arg(long)]
        network_id: String,
        /// Producer key file; its public key goes into the config.
        #[arg(
            long,
            conflicts_with = "producer_public_key",
            required_unless_present = "producer_public_key"
        )]
        producer_key: Option<PathBuf>,
        /// Producer public key as 64 hex characters.
        #[arg(long)]
        producer_public_key: Option<String>,
        /// Genesis timestamp in ms since the epoch (default: now).
        #[arg(long)]
        timestamp_ms: Option<u64>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Print the head, or one block, of a store. The node must not be running on it.
    Inspect {
        /// Data directory of the node (or use --store).
        #[arg(long, required_unless_present = "store", conflicts_with = "store")]
        data_dir: Option<PathBuf>,
        /// Path of the store file itself.
        #[arg(long)]
        store: Option<PathBuf>,
        #[arg(long, conflicts_with = "hash")]
        height: Option<u64>,
        /// Block hash (64 hex characters).
        #[arg(long)]
        hash: Option<String>,
        /// Verify the whole stored chain against this network config.
        #[arg(long)]
        check: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Extend a store with generated blocks offline (producer config required). Prints
    /// `committed <height>` after each committed batch.
    GenChain {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        blocks: u64,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, short)]
    config: PathBuf,
    /// Overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides `metrics.listen`.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Overrides `log.format`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Overrides `log.filter` (RUST_LOG, when set, still wins).
    #[arg(long)]
    log_filter: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyKind {
    Producer,
    Node,
}

enum Failure {
    Usage(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

fn main() -> ExitCode {
    // Fail points exist only in test builds (the `fail` crate's `failpoints` feature, which the
    // crash test turns on); there `FAILPOINTS` configures them. Release builds ignore it.
    let _failpoints = fail::has_failpoints().then(fail::FailScenario::setup);
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

fn dispatch(cmd: Cmd) -> Result<(), Failure> {
    match cmd {
        Cmd::Run(args) => run(args),
        Cmd::Keygen { out, kind, force } => {
            let key = keys::generate();
            let kind = match kind {
                KeyKind::Producer => "producer",
                KeyKind::Node => "node",
            };
            keys::write(&out, &key, kind, force).map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
                    " (use --force to overwrite)"
                } else {
                    ""
                };
                usage(format!("{}: {e}{hint}", out.display()))
            })?;
            println!("{}", keys::public_key(&key));
            Ok(())
        }
        Cmd::Genesis {
            network_id,
            producer_key,
            producer_public_key,
            timestamp_ms,
            out,
            force,
        } => {
            let producer = match (producer_key, producer_public_key) {
                (Some(f), _) => keys::public_key(&keys::read(&f).map_err(usage)?),
                (None, Some(hex)) => H256::from_hex(&hex)
                    .map_err(|e| usage(format!("--producer-public-key: {e}")))?,
                (None, None) => unreachable!("clap requires one of them"),
            };
            let cfg = NetworkConfig::new(
                &network_id,
                timestamp_ms.unwrap_or_else(node::now_ms),
                producer,
            )
            .map_err(usage)?;
            if out.exists() && !force {
                return Err(usage(format!(
                    "{} exists (use --force to overwrite)",
                    out.display()
                )));
            }
            let yaml = serde_yaml::to_string(&cfg).map_err(anyhow::Error::from)?;
            std::fs::write(
                &out,
                format!("# syncnet network config, written by `syncnode genesis`\n{yaml}"),
            )
            .map_err(|e| usage(format!("{}: {e}", out.display())))?;
            println!("{}", cfg.genesis_hash.expect("set by NetworkConfig::new"));
            Ok(())
        }
        Cmd::Inspect {
            data_dir,
            store,
            height,
            hash,
            check,
            json,
        } => inspect(data_dir, store, height, hash, check, json),
        Cmd::GenChain {
            config,
            blocks,
            batch,
            data_dir,
        } => {
            let overrides = Overrides {
                data_dir,
                ..Default::default()
            };
            let loaded = NodeConfig::load(&config, &overrides).map_err(usage)?;
            let pcfg = loaded.node.producer.clone().ok_or_else(|| {
                usage(format!("{}: producer: section required", config.display()))
            })?;
            let producer = load_producer(&loaded, &config)?.expect("producer section present");
            std::fs::create_dir_all(&loaded.node.data_dir).map_err(anyhow::Error::from)?;
            let store = Store::open_or_init(&loaded.node.store_path(), &loaded.spec)
                .map_err(anyhow::Error::from)?;
            let mut stdout = std::io::stdout().lock();
            let head = generate_chain(
                &store,
                &loaded.spec,
                &producer,
                blocks,
                batch,
                pcfg.interval_ms,
                |h| {
                    // Best effort: a closed stdout must not abort generation.
                    let _ = writeln!(stdout, "committed {}", h.height);
                    let _ = stdout.flush();
                },
            )
            .map_err(anyhow::Error::from)?;
            eprintln!("head {} {}", head.height, head.hash);
            Ok(())
        }
    }
}

/// Reads the producer key named in the config and checks it is the network's producer.
fn load_producer(
    loaded: &syncnet_node::config::Loaded,
    config: &Path,
) -> Result<Option<Producer>, Failure> {
    let Some(p) = &loaded.node.producer else {
        return Ok(None);
    };
    let key = keys::read(&p.key_file)
        .map_err(|e| usage(format!("{}: producer.key_file: {e}", config.display())))?;
    if keys::public_key(&key) != loaded.spec.producer() {
        return Err(usage(format!(
            "{}: producer.key_file: key {} is not this network's producer ({})",
            config.display(),
            keys::public_key(&key),
            loaded.spec.producer()
        )));
    }
    Ok(Some(Producer::new(key, p.payload_bytes, p.seed)))
}

fn run(args: RunArgs) -> Result<(), Failure> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        metrics_listen: args.metrics_listen,
        log_format: args.log_format,
        log_filter: args.log_filter,
    };
    let loaded = NodeConfig::load(&args.config, &overrides).map_err(usage)?;
    let producer = load_producer(&loaded, &args.config)?;
    init_logging(loaded.node.log.format, &loaded.node.log.filter);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("syncnode")
        .build()
        .map_err(anyhow::Error::from)?;
    rt.block_on(node::run(loaded, producer, node::shutdown_signal()))?;
    Ok(())
}

fn init_logging(format: LogFormat, filter: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // Repeated INFO/WARN lines from one call site are throttled (a hostile peer must not fill the
    // disk with them); see syncnet_node::logthrottle.
    let filter = filter.and(syncnet_node::logthrottle::Throttle::filter());
    // Colour only for a terminal: stressnet and the operator keep node logs in files.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
}

fn inspect(
    data_dir: Option<PathBuf>,
    store: Option<PathBuf>,
    height: Option<u64>,
    hash: Option<String>,
    check: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let path = store.unwrap_or_else(|| data_dir.expect("clap requires one").join("chain.redb"));
    let store = Store::open(&path).map_err(|e| Failure::Runtime(e.into()))?;
    if let Some(net) = check {
        let spec = NetworkConfig::load(&net)
            .map_err(usage)?
            .chain_spec()
            .map_err(usage)?;
        let n = store.check(&spec).map_err(|e| Failure::Runtime(e.into()))?;
        eprintln!("checked {n} blocks: the chain verifies, and the segments and indexes agree");
    }
    let height = match hash {
        Some(h) => {
            let h = H256::from_hex(&h).map_err(|e| usage(format!("--hash: {e}")))?;
            Some(
                store
                    .height_of(&h)
                    .map_err(|e| Failure::Runtime(e.into()))?
                    .ok_or_else(|| Failure::Runtime(anyhow::anyhow!("no block with hash {h}")))?,
            )
        }
        None => height,
    };
    match height {
        None => {
            let head = store.head();
            if json {
                let v = serde_json::json!({
                    "genesis": store.genesis_hash(),
                    "height": head.height,
                    "hash": head.hash,
                    "header": head.header,
                    "store_bytes": store.size_bytes(),
                });
                println!("{v}");
            } else {
                println!("genesis     {}", store.genesis_hash());
                println!("head height {}", head.height);
                println!("head hash   {}", head.hash);
                println!("timestamp   {} ms", head.header.timestamp_ms);
                println!("store bytes {}", store.size_bytes());
            }
        }
        Some(h) => {
            let block = store
                .block(h)
                .map_err(|e| Failure::Runtime(e.into()))?
                .ok_or_else(|| Failure::Runtime(anyhow::anyhow!("no block at height {h}")))?;
            if json {
                let v = serde_json::json!({
                    "hash": block.hash(),
                    "header": block.header,
                    "signature": block.signature,
                    "payload_len": block.payload.len(),
                });
                println!("{v}");
            } else {
                let hd = &block.header;
                println!("height       {}", hd.height);
                println!("hash         {}", block.hash());
                println!("parent       {}", hd.parent_hash);
                println!("timestamp    {} ms", hd.timestamp_ms);
                println!(
                    "payload      {} bytes, hash {}",
                    hd.payload_len, hd.payload_hash
                );
                println!("producer     {}", hd.producer);
                if let Some(r) = hd.ida_root {
                    println!("ida root     {r}");
                }
            }
        }
    }
    Ok(())
}
