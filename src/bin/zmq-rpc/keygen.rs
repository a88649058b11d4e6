//! `zmq-rpc keygen`: a new CURVE key pair, as two lines for a `.env` file.
//!
//! The same two lines serve every role: on a server or broker the secret key turns CURVE
//! on; on a client or worker the pair is its own identity for allow-lists, and it needs
//! the server's public key as `ZMQ_RPC_CURVE_SERVER_KEY` besides.
//!
//! The lines are `NAME=<Z85>`, unquoted, as `.env` files and `docker --env-file` expect.
//! Z85 uses `$` and `#`, which `.env` readers would expand or cut off unquoted, so a
//! pair whose text holds either is drawn again: about one pair in five qualifies, so the
//! restriction costs about 2 of the key's 256 bits. Keys made elsewhere may
//! hold them; quote such values in single quotes.

use zmq_rpc::config::vars;
use zmq_rpc::Error;

/// Draws before giving up; at one qualifying pair in five, 1,000 draws all fail with a
/// chance below 1e-100.
const MAX_DRAWS: usize = 1000;

pub(crate) fn run() -> Result<(), Error> {
    let (public, secret) = env_safe_keypair()?;
    println!("{}={public}", vars::CURVE_PUBLIC_KEY);
    println!("{}={secret}", vars::CURVE_SECRET_KEY);
    Ok(())
}

fn env_safe_keypair() -> Result<(String, String), Error> {
    let safe = |key: &str| !key.contains(['$', '#']);
    for _ in 0..MAX_DRAWS {
        let (public, secret) = zmq_rpc::generate_curve_keypair()?;
        if safe(&public) && safe(&secret) {
            return Ok((public, secret));
        }
    }
    Err(Error::Config(
        "no key pair without '$' or '#' came out of 1000 draws".into(),
    ))
}
