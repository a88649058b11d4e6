//! The one error type of zmq-rpc, and the error kinds that travel on the wire.

use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in a call, in starting a server, broker or worker.
///
/// The first four kinds are the seed's; each kind that a server can send has a wire
/// name ([`Error::wire_kind`]) that appears as `error.type` in a reply (see
/// `docs/protocol.md`). Kinds without a wire name happen only on the local side.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// No reply in time (wire `TimeoutError`): the client's timeout ran out, or the
    /// server's `timeout` passed before a worker answered.
    Timeout(String),
    /// The function ran and failed (wire `RuntimeError`); carries the server's message.
    Runtime(String),
    /// No function of that name is registered (wire `NameError`).
    Name(String),
    /// The password was wrong (wire `PermissionError`). A request without a password
    /// field is malformed: [`Error::Protocol`].
    Permission(String),
    /// The arguments do not fit the function: wrong count, wrong type, unknown keyword
    /// (wire `TypeError`), or the result did not fit the type the caller asked for.
    Type(String),
    /// A message was not what the protocol allows (wire `ProtocolError`): not JSON,
    /// not an object, a field of the wrong type, extra frames.
    Protocol(String),
    /// The broker's queue is full (wire `OverloadError`); try again after `retry_after`.
    Overloaded {
        /// What the server said.
        message: String,
        /// When the server suggests to try again.
        retry_after: Duration,
    },
    /// The request was accepted but cannot be completed: its worker was lost or the
    /// server is shutting down (wire `UnavailableError`).
    Unavailable(String),
    /// ZeroMQ failed locally: a bind, connect, send or receive (no wire name).
    Transport(String),
    /// The configuration is invalid or asks for something this build lacks, such as
    /// CURVE without libsodium (no wire name).
    Config(String),
}

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The name of this kind on the wire (`error.type`), or `None` for local-only kinds.
    pub fn wire_kind(&self) -> Option<&'static str> {
        Some(match self {
            Error::Timeout(_) => "TimeoutError",
            Error::Runtime(_) => "RuntimeError",
            Error::Name(_) => "NameError",
            Error::Permission(_) => "PermissionError",
            Error::Type(_) => "TypeError",
            Error::Protocol(_) => "ProtocolError",
            Error::Overloaded { .. } => "OverloadError",
            Error::Unavailable(_) => "UnavailableError",
            Error::Transport(_) | Error::Config(_) => return None,
        })
    }

    /// A short name for this kind, as the CLI prints it: the wire name, or
    /// `TransportError` / `ConfigError` for local kinds.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Transport(_) => "TransportError",
            Error::Config(_) => "ConfigError",
            other => other.wire_kind().unwrap_or("Error"),
        }
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Timeout(m)
            | Error::Runtime(m)
            | Error::Name(m)
            | Error::Permission(m)
            | Error::Type(m)
            | Error::Protocol(m)
            | Error::Unavailable(m)
            | Error::Transport(m)
            | Error::Config(m) => m,
            Error::Overloaded { message, .. } => message,
        }
    }

    /// Rebuilds an error from the `type` and `message` of a wire reply.
    ///
    /// An unknown `type` (from a newer server) becomes [`Error::Runtime`] with the
    /// type kept in the message, so nothing the server said is lost.
    pub fn from_wire(kind: &str, message: String, retry_after_ms: Option<u64>) -> Error {
        match kind {
            "TimeoutError" => Error::Timeout(message),
            "RuntimeError" => Error::Runtime(message),
            "NameError" => Error::Name(message),
            "PermissionError" => Error::Permission(message),
            "TypeError" => Error::Type(message),
            "ProtocolError" => Error::Protocol(message),
            "OverloadError" => Error::Overloaded {
                message,
                retry_after: Duration::from_millis(retry_after_ms.unwrap_or(0)),
            },
            "UnavailableError" => Error::Unavailable(message),
            other => Error::Runtime(format!("{other}: {message}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind_name(), self.message())
    }
}

impl std::error::Error for Error {}

impl From<zmq::Error> for Error {
    fn from(e: zmq::Error) -> Self {
        Error::Transport(e.to_string())
    }
}

#[allow(dead_code)]
fn assert_error_is_send_sync_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Error>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_kind_round_trips() {
        let all = [
            Error::Timeout("t".into()),
            Error::Runtime("r".into()),
            Error::Name("n".into()),
            Error::Permission("p".into()),
            Error::Type("ty".into()),
            Error::Protocol("pr".into()),
            Error::Overloaded {
                message: "o".into(),
                retry_after: Duration::from_millis(250),
            },
            Error::Unavailable("u".into()),
        ];
        for e in all {
            let kind = e.wire_kind().expect("wire kind");
            let retry = match &e {
                Error::Overloaded { retry_after, .. } => Some(retry_after.as_millis() as u64),
                _ => None,
            };
            assert_eq!(Error::from_wire(kind, e.message().to_owned(), retry), e);
        }
    }

    #[test]
    fn unknown_wire_kind_keeps_its_name() {
        let e = Error::from_wire("QuotaError", "too many".into(), None);
        assert_eq!(e, Error::Runtime("QuotaError: too many".into()));
    }

    #[test]
    fn display_is_kind_colon_message() {
        assert_eq!(
            Error::Name("no function `x`".into()).to_string(),
            "NameError: no function `x`"
        );
        assert_eq!(Error::Config("c".into()).to_string(), "ConfigError: c");
    }
}
