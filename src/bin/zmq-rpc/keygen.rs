//! `zmq-rpc keygen`: a CURVE key pair for a server or broker.

use zmq_rpc::config::vars;
use zmq_rpc::Error;

pub(crate) fn run() -> Result<(), Error> {
    let (public, secret) = zmq_rpc::generate_curve_keypair()?;
    println!("# Give the public key to clients and workers; keep the secret key on the server.");
    println!("{}={public}", vars::CURVE_SERVER_KEY);
    println!("{}={secret}", vars::CURVE_SECRET_KEY);
    Ok(())
}
