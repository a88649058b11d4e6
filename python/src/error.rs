//! zmq-rpc errors as Python exceptions.
//!
//! The seed's four kinds are Python's own classes, so `except NameError:` works:
//!
//! | Rust `Error`  | Python exception                        |
//! |---------------|-----------------------------------------|
//! | `Timeout`     | `TimeoutError`                          |
//! | `Runtime`     | `RuntimeError` (the server's message)   |
//! | `Name`        | `NameError`                             |
//! | `Permission`  | `PermissionError`                       |
//! | `Type`        | `TypeError`                             |
//! | `Protocol`    | `zmq_rpc.ProtocolError` (a `RuntimeError`) |
//! | `Overloaded`  | `zmq_rpc.OverloadError` (a `RuntimeError`, with `retry_after` in seconds) |
//! | `Unavailable` | `zmq_rpc.UnavailableError` (a `ConnectionError`) |
//! | `Transport`   | `zmq_rpc.TransportError` (a `ConnectionError`) |
//! | `Config`      | `ValueError`                            |

use pyo3::create_exception;
use pyo3::exceptions::{
    PyConnectionError, PyNameError, PyPermissionError, PyRuntimeError, PyTimeoutError, PyTypeError,
    PyValueError,
};
use pyo3::prelude::*;
use zmq_rpc::Error;

create_exception!(
    zmq_rpc,
    ProtocolError,
    PyRuntimeError,
    "A message was not what the protocol allows (wire `ProtocolError`)."
);
create_exception!(
    zmq_rpc,
    OverloadError,
    PyRuntimeError,
    "The server's queue is full (wire `OverloadError`); `retry_after` says when to try again, in seconds."
);
create_exception!(
    zmq_rpc,
    UnavailableError,
    PyConnectionError,
    "The call was accepted but cannot be completed: its worker was lost or the server is stopping."
);
create_exception!(
    zmq_rpc,
    TransportError,
    PyConnectionError,
    "ZeroMQ failed locally: a bind, connect, send or receive."
);

/// The Python exception for a zmq-rpc error.
pub(crate) fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let message = e.message().to_owned();
    match e {
        Error::Timeout(_) => PyTimeoutError::new_err(message),
        Error::Runtime(_) => PyRuntimeError::new_err(message),
        Error::Name(_) => PyNameError::new_err(message),
        Error::Permission(_) => PyPermissionError::new_err(message),
        Error::Type(_) => PyTypeError::new_err(message),
        Error::Protocol(_) => ProtocolError::new_err(message),
        Error::Overloaded { retry_after, .. } => {
            let err = OverloadError::new_err(message);
            // Setting an attribute on a fresh exception object cannot fail in practice;
            // if it did, the exception without it is still the right one.
            let _ = err
                .value(py)
                .setattr("retry_after", retry_after.as_secs_f64());
            err
        }
        Error::Unavailable(_) => UnavailableError::new_err(message),
        Error::Transport(_) => TransportError::new_err(message),
        Error::Config(_) => PyValueError::new_err(message),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    m.add("OverloadError", py.get_type::<OverloadError>())?;
    m.add("UnavailableError", py.get_type::<UnavailableError>())?;
    m.add("TransportError", py.get_type::<TransportError>())?;
    Ok(())
}
