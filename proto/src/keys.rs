//! Key files: one hex-encoded 32-byte ed25519 secret seed, with `#` comment lines allowed. The same
//! format serves the producer key and (from the p2p layer on) the node identity key.

use std::io::Write as _;
use std::path::Path;

pub use ed25519_dalek::SigningKey;

use crate::chain::H256;

pub fn generate() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

pub fn public_key(key: &SigningKey) -> H256 {
    H256(key.verifying_key().to_bytes())
}

/// The libp2p identity of a node key (its peer id is what bootnode addresses end in).
pub fn identity_of(key: &SigningKey) -> libp2p_identity::Keypair {
    libp2p_identity::Keypair::ed25519_from_bytes(key.to_bytes()).expect("32 bytes")
}

/// The peer id of a node key.
pub fn peer_id(key: &SigningKey) -> libp2p_identity::PeerId {
    identity_of(key).public().to_peer_id()
}

/// Writes `key` to `path` with mode 0600. Refuses to overwrite unless `force`.
pub fn write(path: &Path, key: &SigningKey, kind: &str, force: bool) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(encode(key, kind).as_bytes())?;
    f.sync_all()
}

/// A key file's text (what [`write`] stores; the operator puts it into a Secret).
pub fn encode(key: &SigningKey, kind: &str) -> String {
    format!(
        "# syncnet {kind} key (ed25519 secret seed). Keep private.\n# public key: {}\n{}\n",
        public_key(key),
        hex::encode(key.to_bytes())
    )
}

/// Parses a key file's text; `what` names it in errors.
pub fn parse(text: &str, what: &str) -> Result<SigningKey, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("{what}: no key found"))?;
    let seed = H256::from_hex(line).map_err(|e| format!("{what}: {e}"))?;
    Ok(SigningKey::from_bytes(&seed.0))
}

pub fn read(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_roundtrip_and_no_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = generate();
        write(&p, &k, "producer", false).unwrap();
        assert_eq!(read(&p).unwrap().to_bytes(), k.to_bytes());
        assert!(write(&p, &generate(), "producer", false).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&p, "zz\n").unwrap();
        assert!(read(&p).unwrap_err().contains("hex"));
    }
}
