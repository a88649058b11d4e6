//! `zmq-rpc call FUNCTION [ARG...]`.

use clap::Args;
use serde_json::{Map, Value};
use zmq_rpc::Error;

use crate::Connection;

#[derive(Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    connection: Connection,
    /// Keyword argument NAME=VALUE (VALUE parsed like ARG); may repeat.
    #[arg(long = "kw", value_name = "NAME=VALUE")]
    kwargs: Vec<String>,
    /// The function's registered name.
    function: String,
    /// Positional arguments: each parsed as JSON if it is JSON, else taken as a string.
    #[arg(allow_hyphen_values = true)]
    args: Vec<String>,
}

/// `5` is a number, `"5"` and `abc` are strings, `[1,2]` is a list.
pub(crate) fn parse_arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

pub(crate) fn run(args: &CallArgs) -> Result<(), Error> {
    let mut kwargs = Map::new();
    for kw in &args.kwargs {
        let (name, value) = kw
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--kw {kw:?} is not NAME=VALUE")))?;
        kwargs.insert(name.to_owned(), parse_arg(value));
    }
    let positional = args.args.iter().map(|a| parse_arg(a)).collect();
    let result = args
        .connection
        .client()
        .call_with(&args.function, positional, kwargs)?;
    println!("{result}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_arg;
    use serde_json::json;

    #[test]
    fn args_are_json_else_strings() {
        assert_eq!(parse_arg("5"), json!(5));
        assert_eq!(parse_arg("[1, 2]"), json!([1, 2]));
        assert_eq!(parse_arg("\"5\""), json!("5"));
        assert_eq!(parse_arg("hello world"), json!("hello world"));
        assert_eq!(parse_arg("-3.5"), json!(-3.5));
    }
}
