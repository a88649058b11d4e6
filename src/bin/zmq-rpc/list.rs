//! `zmq-rpc list`: the functions a server offers.

use clap::Args;
use zmq_rpc::Error;

use crate::Connection;

#[derive(Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &ListArgs) -> Result<(), Error> {
    let functions = args.connection.client().list_functions()?;
    if args.json {
        let text =
            serde_json::to_string_pretty(&functions).map_err(|e| Error::Protocol(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    for f in functions {
        let params = match (&f.params, f.param_names.is_empty()) {
            (None, _) => "*args, **kwargs".to_owned(),
            (Some(n), true) => format!("{n} positional"),
            (Some(_), false) => f.param_names.join(", "),
        };
        println!(
            "{}({params})  [{} worker(s)]  {}",
            f.name, f.workers, f.description
        );
    }
    Ok(())
}
