//! `RPCClient`: the seed's client, with attribute access returning a callable proxy.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde_json::Value;
use zmq_rpc::{config, RpcClient};

use crate::convert::{args_to_json, kwargs_to_json, to_py};
use crate::error::to_pyerr;

/// A connection to an RPC server or broker; `client.add(5, 7)` calls `add` remotely.
///
/// `RPCClient(password, host="localhost", port=8421)` as in the seed; the keyword-only
/// options are `RpcClient`'s setters. Durations are in milliseconds. One client holds
/// one socket: calls from several threads on one client take turns, so give each
/// thread its own client for parallel calls.
#[pyclass(name = "RPCClient", module = "zmq_rpc", frozen)]
pub(crate) struct PyClient {
    client: Mutex<RpcClient>,
    endpoint: String,
}

impl PyClient {
    fn call_json(
        &self,
        py: Python<'_>,
        function: &str,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyObject> {
        let args = args_to_json(args)?;
        let kwargs = kwargs_to_json(kwargs)?;
        // The GIL is released for the whole round trip, so other Python threads (and
        // Python functions of a server in this process) run meanwhile.
        let outcome = py.allow_threads(|| {
            let client = self.client.lock().unwrap_or_else(|p| p.into_inner());
            client.call_with(function, args, kwargs)
        });
        self.result(py, outcome)
    }

    fn result(&self, py: Python<'_>, outcome: Result<Value, zmq_rpc::Error>) -> PyResult<PyObject> {
        match outcome {
            Ok(v) => Ok(to_py(py, &v)?.unbind()),
            Err(e) => Err(to_pyerr(py, e)),
        }
    }
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (
        password, host = config::DEFAULT_HOST.to_owned(), port = config::DEFAULT_PORT, *,
        endpoint = None, timeout = None, retries = None, backoff_base = None,
        backoff_cap = None, attempt_timeout = None, curve_server_key = None,
        curve_keypair = None, max_message_size = None
    ),
    text_signature = "(password, host='localhost', port=8421, *, endpoint=None, timeout=None, \
        retries=None, backoff_base=None, backoff_cap=None, attempt_timeout=None, \
        curve_server_key=None, curve_keypair=None, max_message_size=None)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        password: String,
        host: String,
        port: u16,
        endpoint: Option<String>,
        timeout: Option<u64>,
        retries: Option<u32>,
        backoff_base: Option<u64>,
        backoff_cap: Option<u64>,
        attempt_timeout: Option<u64>,
        curve_server_key: Option<String>,
        curve_keypair: Option<(String, String)>,
        max_message_size: Option<usize>,
    ) -> PyClient {
        let mut c = match endpoint {
            Some(e) => RpcClient::with_endpoint(password, &e),
            None => RpcClient::new(password, &host, port),
        };
        if let Some(ms) = timeout {
            c = c.timeout(Duration::from_millis(ms));
        }
        if let Some(n) = retries {
            c = c.retries(n);
        }
        if backoff_base.is_some() || backoff_cap.is_some() {
            c = c.backoff(
                backoff_base.map_or(config::DEFAULT_BACKOFF_BASE, Duration::from_millis),
                backoff_cap.map_or(config::DEFAULT_BACKOFF_CAP, Duration::from_millis),
            );
        }
        if let Some(ms) = attempt_timeout {
            c = c.attempt_timeout(Duration::from_millis(ms));
        }
        if let Some(key) = curve_server_key {
            c = c.curve_server_key(key);
        }
        if let Some((public, secret)) = curve_keypair {
            c = c.curve_keypair(public, secret);
        }
        if let Some(n) = max_message_size {
            c = c.max_message_size(n);
        }
        PyClient {
            endpoint: c.endpoint().to_owned(),
            client: Mutex::new(c),
        }
    }

    /// The endpoint this client calls, e.g. `tcp://localhost:8421`.
    #[getter]
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls `function` by name with positional and keyword arguments; for names that
    /// are not valid Python attributes or that this class already uses.
    #[pyo3(signature = (function, /, *args, **kwargs))]
    fn call(
        &self,
        py: Python<'_>,
        function: &str,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyObject> {
        self.call_json(py, function, args, kwargs)
    }

    /// The built-in health check: returns the server's name.
    fn ping(&self, py: Python<'_>) -> PyResult<PyObject> {
        let outcome = py.allow_threads(|| {
            let client = self.client.lock().unwrap_or_else(|p| p.into_inner());
            client.ping().map(Value::String)
        });
        self.result(py, outcome)
    }

    /// The built-in introspection: one dict per function (`name`, `description`,
    /// `params`, `param_names`, `idempotent`, `workers`), sorted by name.
    fn list_functions(&self, py: Python<'_>) -> PyResult<PyObject> {
        let outcome = py.allow_threads(|| {
            let client = self.client.lock().unwrap_or_else(|p| p.into_inner());
            client.list_functions().map(|fs| {
                Value::Array(
                    fs.into_iter()
                        .map(|f| serde_json::to_value(f).unwrap_or(Value::Null))
                        .collect(),
                )
            })
        });
        self.result(py, outcome)
    }

    /// `client.NAME` is a callable that calls the remote function NAME.
    fn __getattr__(slf: &Bound<'_, Self>, name: &str) -> PyResult<RemoteMethod> {
        // Dunder lookups (copy, pickle, IPython probes) are not remote functions.
        if name.starts_with("__") && name.ends_with("__") {
            return Err(PyAttributeError::new_err(name.to_owned()));
        }
        Ok(RemoteMethod {
            client: slf.clone().unbind(),
            name: name.to_owned(),
        })
    }

    fn __repr__(&self) -> String {
        format!("RPCClient(endpoint={:?})", self.endpoint)
    }
}

/// A remote function bound to a client: `client.add` is one; calling it calls `add`.
#[pyclass(module = "zmq_rpc", frozen)]
pub(crate) struct RemoteMethod {
    client: Py<PyClient>,
    name: String,
}

#[pymethods]
impl RemoteMethod {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyObject> {
        self.client.get().call_json(py, &self.name, args, kwargs)
    }

    /// The remote function's name.
    #[getter]
    fn __name__(&self) -> &str {
        &self.name
    }

    fn __repr__(&self) -> String {
        format!(
            "<remote function {:?} at {}>",
            self.name,
            self.client.get().endpoint
        )
    }
}
