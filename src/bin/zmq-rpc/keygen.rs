//! `zmq-rpc keygen`: a new CURVE key pair, as two lines for a `.env` file.
//!
//! The same two lines serve every role: on a server or broker the secret key turns CURVE
//! on; on a client or worker the pair is its own identity for allow-lists, and it needs
//! the server's public key as `ZMQ_RPC_CURVE_SERVER_KEY` besides.
//!
//! The values are in single quotes: Z85 uses `$` and `#`, which `.env` readers and
//! shells would otherwise expand or cut; Z85 never uses a quote itself.

use zmq_rpc::config::vars;
use zmq_rpc::Error;

pub(crate) fn run() -> Result<(), Error> {
    let (public, secret) = zmq_rpc::generate_curve_keypair()?;
    println!("{}='{public}'", vars::CURVE_PUBLIC_KEY);
    println!("{}='{secret}'", vars::CURVE_SECRET_KEY);
    Ok(())
}
