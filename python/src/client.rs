//! `RPCClient`: the seed's client, with attribute access returning a callable proxy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde_json::Value;
use zmq_rpc::{config, RpcClient};

use crate::convert::{args_to_json, kwargs_to_json, to_py};
use crate::error::to_pyerr;
use crate::pending::Pipeline;

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
    /// What built `client`, to build the one `submit` uses, with the same settings.
    settings: Settings,
    /// The thread that owns the submitting client; started by the first `submit`.
    pipeline: Mutex<Option<Arc<Pipeline>>>,
}

/// The constructor's arguments; `None`: the environment or the Rust default.
struct Settings {
    password: String,
    endpoint: String,
    timeout: Option<u64>,
    retries: Option<u32>,
    backoff_base: Option<u64>,
    backoff_cap: Option<u64>,
    attempt_timeout: Option<u64>,
    curve_server_key: Option<String>,
    curve_keypair: Option<(String, String)>,
    max_message_size: Option<usize>,
    data_frames: Option<bool>,
}

impl Settings {
    fn build(&self) -> RpcClient {
        let mut c = RpcClient::with_endpoint(self.password.clone(), &self.endpoint);
        if let Some(ms) = self.timeout {
            c = c.timeout(Duration::from_millis(ms));
        }
        if let Some(n) = self.retries {
            c = c.retries(n);
        }
        if self.backoff_base.is_some() || self.backoff_cap.is_some() {
            c = c.backoff(
                self.backoff_base
                    .map_or(config::DEFAULT_BACKOFF_BASE, Duration::from_millis),
                self.backoff_cap
                    .map_or(config::DEFAULT_BACKOFF_CAP, Duration::from_millis),
            );
        }
        if let Some(ms) = self.attempt_timeout {
            c = c.attempt_timeout(Duration::from_millis(ms));
        }
        if let Some(key) = &self.curve_server_key {
            c = c.curve_server_key(key.clone());
        }
        if let Some((public, secret)) = &self.curve_keypair {
            c = c.curve_keypair(public.clone(), secret.clone());
        }
        if let Some(n) = self.max_message_size {
            c = c.max_message_size(n);
        }
        if let Some(on) = self.data_frames {
            c = c.data_frames(on);
        }
        c
    }
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

    /// The thread that owns the submitting client, started on first use.
    fn pipeline(&self) -> Result<Arc<Pipeline>, zmq_rpc::Error> {
        let mut slot = self.pipeline.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = slot.as_ref() {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(Pipeline::start(self.settings.build())?);
        *slot = Some(Arc::clone(&p));
        Ok(p)
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
        curve_keypair = None, max_message_size = None, data_frames = None
    ),
    text_signature = "(password, host='localhost', port=8421, *, endpoint=None, timeout=None, \
        retries=None, backoff_base=None, backoff_cap=None, attempt_timeout=None, \
        curve_server_key=None, curve_keypair=None, max_message_size=None, data_frames=None)")]
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
        data_frames: Option<bool>,
    ) -> PyClient {
        let settings = Settings {
            password,
            endpoint: endpoint.unwrap_or_else(|| config::tcp_endpoint(&host, port)),
            timeout,
            retries,
            backoff_base,
            backoff_cap,
            attempt_timeout,
            curve_server_key,
            curve_keypair,
            max_message_size,
            data_frames,
        };
        let client = settings.build();
        PyClient {
            endpoint: client.endpoint().to_owned(),
            client: Mutex::new(client),
            settings,
            pipeline: Mutex::new(None),
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

    /// Sends a call to `function` without waiting for its result and returns a
    /// `Pending`; its `wait()` returns the result (or raises the call's error). Many
    /// calls can be in flight at once (Rust: `RpcClient::submit`). A submitted call is
    /// sent once, without retries, with the client's timeout as its deadline.
    /// Submitted calls travel on a second connection of this client, with the same
    /// settings, owned by a thread of its own.
    #[pyo3(signature = (function, /, *args, **kwargs))]
    fn submit(
        slf: &Bound<'_, Self>,
        function: String,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyPending> {
        let py = slf.py();
        let args = args_to_json(args)?;
        let kwargs = kwargs_to_json(kwargs)?;
        let this = slf.get();
        let outcome = py.allow_threads(|| this.pipeline()?.submit(function.clone(), args, kwargs));
        let (key, id) = outcome.map_err(|e| to_pyerr(py, e))?;
        Ok(PyPending {
            client: slf.clone().unbind(),
            key,
            id,
            function,
            outcome: Mutex::new(None),
        })
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

/// A call sent with `RPCClient.submit` (Rust: `Pending`). `wait()` returns its result
/// or raises its error; waiting again gives the same outcome. Dropping it before
/// `wait()` abandons the call: its reply is discarded when it comes.
#[pyclass(name = "Pending", module = "zmq_rpc", frozen)]
pub(crate) struct PyPending {
    client: Py<PyClient>,
    key: u64,
    /// The request's id on the wire.
    #[pyo3(get)]
    id: String,
    function: String,
    /// The outcome, once `wait()` has it.
    outcome: Mutex<Option<Result<Value, zmq_rpc::Error>>>,
}

#[pymethods]
impl PyPending {
    /// Waits for the call's result (with the GIL released) and returns it; raises the
    /// call's error, `TimeoutError` when no reply came within the client's timeout.
    fn wait(&self, py: Python<'_>) -> PyResult<PyObject> {
        let outcome = py.allow_threads(|| {
            let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
            if outcome.is_none() {
                *outcome = Some(self.client.get().pipeline().and_then(|p| p.wait(self.key)));
            }
            outcome.clone().unwrap_or(Ok(Value::Null))
        });
        self.client.get().result(py, outcome)
    }

    /// Whether `wait()` has returned (or raised) already.
    fn done(&self) -> bool {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn __repr__(&self) -> String {
        format!("<Pending {:?} id={:?}>", self.function, self.id)
    }
}

impl Drop for PyPending {
    fn drop(&mut self) {
        let waited = self
            .outcome
            .get_mut()
            .map_or(true, |outcome| outcome.is_some());
        if !waited {
            if let Ok(p) = self.client.get().pipeline() {
                p.abandon(self.key);
            }
        }
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
