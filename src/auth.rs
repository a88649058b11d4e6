//! CURVE allow-lists, and the ZAP handler that applies them during the handshake.
//!
//! libzmq asks a ZAP handler (RFC 27/ZAP) bound at `inproc://zeromq.zap.01` in the same
//! context about every CURVE handshake on a socket with a ZAP domain. Ours answers 200
//! when the peer's public key is on the allow-list of the socket's domain (clients or
//! workers), 400 otherwise; a domain without an allow-list admits any key (CURVE then
//! only encrypts). The list file is read again when its modification time or size
//! changes, so editing it needs no restart.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::actor::Actor;
use crate::error::Error;
use crate::transport::{self, ZAP_DOMAIN_CLIENTS, ZAP_DOMAIN_WORKERS};

/// Bumped on SIGHUP: every allow-list is read again at its next use.
static RELOAD: AtomicU64 = AtomicU64::new(0);

/// Makes every allow-list of this process be read again at its next use.
pub(crate) fn request_reload() {
    RELOAD.fetch_add(1, Ordering::Relaxed);
}

/// The public keys one endpoint accepts, read from a file.
#[derive(Debug)]
pub(crate) struct AllowList {
    path: PathBuf,
    keys: HashSet<[u8; 32]>,
    /// Modification time and size when last read.
    stamp: Option<(SystemTime, u64)>,
    /// [`RELOAD`] when last read.
    generation: u64,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Parses an allow-list: one Z85 public key per line; blank lines and `#` comments are
/// skipped; a line may also be `ZMQ_RPC_CURVE_PUBLIC_KEY=<key>` as `zmq-rpc keygen`
/// prints it.
pub(crate) fn parse_keys(text: &str) -> Result<HashSet<[u8; 32]>, String> {
    let mut keys = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        // Z85 has `#` in its alphabet, but never first in a 5-character group (that
        // would be a value of at least 84 * 85^4 > 2^32): a key cannot look like a comment.
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Z85 has `=` in its alphabet: only a `ZMQ_RPC_` prefix marks a variable line.
        let prefix = format!("{}=", crate::config::vars::CURVE_PUBLIC_KEY);
        let key = match line.strip_prefix(&prefix) {
            // keygen prints values bare; a hand-edited file may quote them
            Some(value) => value.trim().trim_matches('\''),
            None if line.starts_with("ZMQ_RPC_") => {
                // Never echo the value: it may be a secret key pasted by mistake.
                let name = line.split('=').next().unwrap_or_default();
                return Err(format!("line {}: `{name}` is not a public key line", n + 1));
            }
            None => line,
        };
        let bytes = transport::decode_key(key, "key")
            .map_err(|_| format!("line {}: not a 40-character Z85 public key", n + 1))?;
        keys.insert(bytes);
    }
    Ok(keys)
}

impl AllowList {
    /// Reads the list at `path`.
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or a line is not a key.
    pub(crate) fn load(path: &Path) -> Result<AllowList, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read allow-list {}: {e}", path.display()))
        })?;
        let keys = parse_keys(&text)
            .map_err(|e| Error::Config(format!("allow-list {}: {e}", path.display())))?;
        Ok(AllowList {
            path: path.to_owned(),
            generation: RELOAD.load(Ordering::Relaxed),
            keys,
            stamp: stamp(path),
        })
    }

    /// Reads the file again if it changed since the last read (or a reload was
    /// requested, see [`request_reload`]). A file that has become
    /// unreadable or invalid keeps the last good list (and is logged), so a half-written
    /// edit never opens or closes the door by accident.
    pub(crate) fn refresh(&mut self) {
        let now = stamp(&self.path);
        let generation = RELOAD.load(Ordering::Relaxed);
        if now == self.stamp && generation == self.generation {
            return;
        }
        self.stamp = now;
        self.generation = generation;
        match AllowList::load(&self.path) {
            Ok(fresh) => {
                tracing::info!(file = %self.path.display(), keys = fresh.keys.len(), "allow-list reloaded");
                self.keys = fresh.keys;
            }
            Err(e) => tracing::error!(error = %e, "keeping the previous allow-list"),
        }
    }

    /// Whether `key` (32 bytes) is on the list, after a [`AllowList::refresh`].
    pub(crate) fn allows(&mut self, key: &[u8]) -> bool {
        self.refresh();
        <[u8; 32]>::try_from(key).is_ok_and(|k| self.keys.contains(&k))
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The allow-lists of one broker.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    pub(crate) clients: Option<AllowList>,
    pub(crate) workers: Option<AllowList>,
}

/// ZAP status codes (RFC 27).
const ZAP_OK: &[u8] = b"200";
const ZAP_DENIED: &[u8] = b"400";
const ZAP_INTERNAL: &[u8] = b"500";

impl Gate {
    /// Answers one ZAP request (its frames); `None` when it is too short to answer.
    pub(crate) fn answer(&mut self, request: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
        // version, request id, domain, address, identity, mechanism, credentials...
        let (version, id) = (request.first()?, request.get(1)?);
        let reply = |code: &[u8], text: &str| {
            Some(vec![
                version.clone(),
                id.clone(),
                code.to_vec(),
                text.as_bytes().to_vec(),
                Vec::new(),
                Vec::new(),
            ])
        };
        if version.as_slice() != b"1.0" || request.len() < 6 {
            return reply(ZAP_INTERNAL, "malformed ZAP request");
        }
        let (domain, address, mechanism) = (&request[2], &request[3], &request[5]);
        let list = match domain.as_slice() {
            d if d == ZAP_DOMAIN_CLIENTS.as_bytes() => self.clients.as_mut(),
            d if d == ZAP_DOMAIN_WORKERS.as_bytes() => self.workers.as_mut(),
            _ => None,
        };
        let Some(list) = list else {
            return reply(ZAP_OK, "OK");
        };
        let key = request.get(6).filter(|_| mechanism.as_slice() == b"CURVE");
        match key {
            Some(key) if list.allows(key) => reply(ZAP_OK, "OK"),
            _ => {
                tracing::warn!(
                    domain = %String::from_utf8_lossy(domain),
                    peer = %String::from_utf8_lossy(address),
                    key = %key.and_then(|k| zmq::z85_encode(k).ok()).unwrap_or_default(),
                    "refused a CURVE key that is not on the allow-list"
                );
                reply(ZAP_DENIED, "key not on the allow-list")
            }
        }
    }
}

/// Starts the ZAP handler thread of `ctx`. Call before binding the CURVE sockets.
pub(crate) fn start_zap(ctx: &zmq::Context, mut gate: Gate) -> Result<Actor, Error> {
    let rep = transport::bind_zap(ctx)?;
    Actor::spawn(ctx, "zmq-rpc-zap", move |control| loop {
        let mut items = [
            control.as_poll_item(zmq::POLLIN),
            rep.as_poll_item(zmq::POLLIN),
        ];
        if zmq::poll(&mut items, 1000).is_err() || items[0].is_readable() {
            return;
        }
        if !items[1].is_readable() {
            continue;
        }
        let Ok(request) = rep.recv_multipart(zmq::DONTWAIT) else {
            continue;
        };
        // A REP must answer every request or it wedges; an unanswerable one gets a
        // minimal refusal.
        let frames = gate.answer(&request).unwrap_or_else(|| {
            vec![
                b"1.0".to_vec(),
                Vec::new(),
                ZAP_INTERNAL.to_vec(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ]
        });
        if let Err(e) = rep.send_multipart(frames, 0) {
            tracing::error!(error = %e, "ZAP handler cannot answer");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(domain: &str, mechanism: &str, key: &[u8]) -> Vec<Vec<u8>> {
        vec![
            b"1.0".to_vec(),
            b"7".to_vec(),
            domain.as_bytes().to_vec(),
            b"127.0.0.1".to_vec(),
            Vec::new(),
            mechanism.as_bytes().to_vec(),
            key.to_vec(),
        ]
    }

    #[test]
    fn parses_keys_comments_and_keygen_lines_and_rejects_the_rest() {
        let (a, _) = crate::generate_curve_keypair().unwrap();
        let (b, _) = crate::generate_curve_keypair().unwrap();
        let text = format!("# clients\n\n{a}\nZMQ_RPC_CURVE_PUBLIC_KEY='{b}'\n");
        assert_eq!(parse_keys(&text).unwrap().len(), 2);
        let err = parse_keys("ZMQ_RPC_CURVE_SECRET_KEY=abc").unwrap_err();
        assert!(err.contains("line 1") && !err.contains("abc"), "{err}");
        assert!(parse_keys("short").unwrap_err().contains("line 1"));
    }

    #[test]
    fn a_reload_request_reads_an_edit_that_kept_size_and_mtime() {
        let dir = std::env::temp_dir().join(format!("zmq-rpc-hup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        let (a, _) = crate::generate_curve_keypair().unwrap();
        let (b, _) = crate::generate_curve_keypair().unwrap();
        std::fs::write(&file, &a).unwrap();
        let mut list = AllowList::load(&file).unwrap();
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, &b).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let b_raw = zmq::z85_decode(&b).unwrap();
        assert!(
            !list.allows(&b_raw),
            "the edit is invisible to change detection"
        );
        request_reload(); // what SIGHUP does
        assert!(list.allows(&b_raw));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zap_admits_listed_keys_per_domain_and_reloads_on_change() {
        let dir = std::env::temp_dir().join(format!("zmq-rpc-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("clients");
        let (a, _) = crate::generate_curve_keypair().unwrap();
        let (b, _) = crate::generate_curve_keypair().unwrap();
        let raw = |k: &str| zmq::z85_decode(k).unwrap();
        std::fs::write(&file, format!("{a}\n")).unwrap();
        let mut gate = Gate {
            clients: Some(AllowList::load(&file).unwrap()),
            workers: None,
        };
        let code = |g: &mut Gate, d: &str, m: &str, k: &[u8]| {
            g.answer(&request(d, m, k)).unwrap()[2].clone()
        };
        assert_eq!(
            code(&mut gate, ZAP_DOMAIN_CLIENTS, "CURVE", &raw(&a)),
            b"200"
        );
        assert_eq!(
            code(&mut gate, ZAP_DOMAIN_CLIENTS, "CURVE", &raw(&b)),
            b"400"
        );
        assert_eq!(code(&mut gate, ZAP_DOMAIN_CLIENTS, "NULL", b""), b"400");
        // No worker list: any worker key passes.
        assert_eq!(
            code(&mut gate, ZAP_DOMAIN_WORKERS, "CURVE", &raw(&b)),
            b"200"
        );
        // A longer file (the size changes even within one mtime tick) is read again.
        std::fs::write(&file, format!("{a}\n{b}\n")).unwrap();
        assert_eq!(
            code(&mut gate, ZAP_DOMAIN_CLIENTS, "CURVE", &raw(&b)),
            b"200"
        );
        // A broken edit keeps the last good list.
        std::fs::write(&file, "garbage that is not a key\n").unwrap();
        assert_eq!(
            code(&mut gate, ZAP_DOMAIN_CLIENTS, "CURVE", &raw(&a)),
            b"200"
        );
        assert_eq!(gate.clients.as_ref().unwrap().len(), 2);
        assert_eq!(gate.answer(&[b"1.0".to_vec()]), None);
        assert_eq!(
            gate.answer(&request("x", "CURVE", b"")[..3]).unwrap()[2],
            b"500"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
