//! `zmq-rpc ping`: the health check.

use zmq_rpc::Error;

use crate::Connection;

pub(crate) fn run(connection: &Connection) -> Result<(), Error> {
    let name = connection.client().ping()?;
    println!("{}", serde_json::Value::String(name));
    Ok(())
}
