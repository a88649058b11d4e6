//! `RPCServer`, `Worker`, `Broker` and their running handles.
//!
//! Every blocking wait (serving, shutting down) releases the GIL: the worker threads need
//! it to run Python functions, and a shutdown waits for running calls to finish.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::types::PyCFunction;
use zmq_rpc::{Broker, BrokerHandle, RpcServer, ServerHandle, Worker, WorkerHandle};

use crate::error::to_pyerr;
use crate::function::PythonFunction;

/// How often `serve_forever` looks for Ctrl-C (Python runs signal handlers only when
/// the main thread holds the GIL).
const SIGNAL_POLL: Duration = Duration::from_millis(50);
/// How often `RunningWorker.wait()` looks whether the worker has stopped.
const WAIT_POLL: Duration = Duration::from_millis(10);

/// Something running in background threads.
enum Running {
    Server(ServerHandle),
    Worker(WorkerHandle),
    Broker(BrokerHandle),
}

impl Running {
    fn is_finished(&self) -> bool {
        match self {
            Running::Server(h) => h.is_finished(),
            Running::Worker(h) => h.is_finished(),
            Running::Broker(h) => h.is_finished(),
        }
    }

    /// Why the broker refused a worker, if it did (servers and brokers: never).
    fn refusal(&self) -> Option<zmq_rpc::Error> {
        match self {
            Running::Worker(h) => h.refusal(),
            _ => None,
        }
    }

    fn dropped_messages(&self) -> u64 {
        match self {
            Running::Server(h) => h.dropped_messages(),
            Running::Broker(h) => h.dropped_messages(),
            Running::Worker(_) => 0,
        }
    }

    fn shutdown(self) {
        match self {
            Running::Server(h) => h.shutdown(),
            Running::Worker(h) => h.shutdown(),
            Running::Broker(h) => h.shutdown(),
        }
    }
}

type Slot = Arc<Mutex<Option<Running>>>;

/// Everything started and not yet stopped, so that `atexit` can stop it before the
/// interpreter goes away under worker threads that still want the GIL.
static STARTED: Mutex<Vec<Weak<Mutex<Option<Running>>>>> = Mutex::new(Vec::new());

fn track(running: Running) -> Slot {
    let slot = Arc::new(Mutex::new(Some(running)));
    let mut started = lock(&STARTED);
    started.retain(|w| w.strong_count() > 0);
    started.push(Arc::downgrade(&slot));
    slot
}

fn take(slot: &Slot) -> Option<Running> {
    lock(slot).take()
}

fn stop(py: Python<'_>, slot: &Slot) {
    if let Some(running) = take(slot) {
        py.allow_threads(|| running.shutdown());
    }
}

fn refusal(slot: &Slot) -> Option<zmq_rpc::Error> {
    lock(slot).as_ref().and_then(Running::refusal)
}

fn dropped_messages(slot: &Slot) -> u64 {
    lock(slot).as_ref().map_or(0, Running::dropped_messages)
}

fn is_finished(slot: &Slot) -> bool {
    lock(slot).as_ref().map_or(true, Running::is_finished)
}

/// Stops every server, worker and broker still running (registered with `atexit`).
#[pyfunction]
pub(crate) fn _shutdown_all(py: Python<'_>) {
    let slots: Vec<Slot> = lock(&STARTED)
        .drain(..)
        .filter_map(|w| w.upgrade())
        .collect();
    for slot in &slots {
        stop(py, slot);
    }
}

/// Blocks, with the GIL released, until Ctrl-C (SIGINT), SIGTERM or the running thing
/// stops by itself; then shuts it down. Ctrl-C is a clean stop: it returns normally. A
/// worker the broker refused raises `PermissionError`, as Rust's `Worker::run` returns it.
fn serve(py: Python<'_>, slot: Slot) -> PyResult<()> {
    let restore = on_sigterm_interrupt(py)?;
    let outcome = loop {
        let finished = py.allow_threads(|| {
            std::thread::sleep(SIGNAL_POLL);
            is_finished(&slot)
        });
        if finished {
            break Ok(());
        }
        if let Err(e) = py.check_signals() {
            if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                break Ok(());
            }
            break Err(e);
        }
    };
    let refused = refusal(&slot);
    stop(py, &slot);
    if let Some(old) = restore {
        restore_sigterm(py, &old)?;
    }
    match (outcome, refused) {
        (Ok(()), Some(e)) => Err(to_pyerr(py, e)),
        (outcome, _) => outcome,
    }
}

/// On the main thread, makes SIGTERM raise `KeyboardInterrupt` while serving (Python's
/// default would end the process without a shutdown); returns the old handler.
fn on_sigterm_interrupt(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let threading = py.import("threading")?;
    let main = threading.call_method0("main_thread")?;
    if !threading.call_method0("current_thread")?.is(&main) {
        return Ok(None);
    }
    let signal = py.import("signal")?;
    let sigterm = signal.getattr("SIGTERM")?;
    let old = signal.call_method1("getsignal", (&sigterm,))?;
    let raise = PyCFunction::new_closure(py, None, None, |_args, _kwargs| -> PyResult<()> {
        Err(PyKeyboardInterrupt::new_err("SIGTERM"))
    })?;
    signal.call_method1("signal", (&sigterm, raise))?;
    Ok(Some(old))
}

fn restore_sigterm(py: Python<'_>, old: &Bound<'_, PyAny>) -> PyResult<()> {
    let signal = py.import("signal")?;
    signal.call_method1("signal", (signal.getattr("SIGTERM")?, old))?;
    Ok(())
}

/// Locks `m`; a panic elsewhere while it was held does not make its data unusable here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The builder of an object not started yet; `started_twice` once it was.
fn take_builder<B>(builder: &Mutex<Option<B>>) -> PyResult<B> {
    lock(builder).take().ok_or_else(started_twice)
}

/// What can register a Python function: `RpcServer` and `Worker`.
trait RegistersFunctions {
    fn register(&mut self, f: &PythonFunction);
}

impl RegistersFunctions for RpcServer {
    fn register(&mut self, f: &PythonFunction) {
        f.describe(&mut self.add_raw_function(f.handler(), &f.alias));
    }
}

impl RegistersFunctions for Worker {
    fn register(&mut self, f: &PythonFunction) {
        f.describe(&mut self.add_raw_function(f.handler(), &f.alias));
    }
}

/// The body of `add_external_function` for `RPCServer` and `Worker`.
fn add_function<B: RegistersFunctions>(
    builder: &Mutex<Option<B>>,
    func: &Bound<'_, PyAny>,
    alias: Option<String>,
    description: Option<String>,
    params: Option<Vec<String>>,
    idempotent: bool,
) -> PyResult<()> {
    let f = PythonFunction::new(func, alias, description, params, idempotent)?;
    lock(builder)
        .as_mut()
        .ok_or_else(started_twice)?
        .register(&f);
    Ok(())
}

fn started_twice() -> PyErr {
    PyRuntimeError::new_err("already started: make a new object to start again")
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Applies `setter` when the option was given.
fn set<B, T>(builder: B, value: Option<T>, setter: impl FnOnce(B, T) -> B) -> B {
    match value {
        Some(v) => setter(builder, v),
        None => builder,
    }
}

/// The seed's `RPCServer`: a broker and a pool of worker threads in this process.
///
/// `RPCServer(password, server_name, host="localhost", port=8421, timeout=5000,
/// workers=4)`; `None` (the default) takes the environment (`ZMQ_RPC_HOST`, ...) or
/// those defaults, as the Rust `RpcServer` does. Durations are in milliseconds.
#[pyclass(name = "RPCServer", module = "zmq_rpc", frozen)]
pub(crate) struct PyServer {
    builder: Mutex<Option<RpcServer>>,
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (
        password, server_name, host = None, port = None, timeout = None, workers = None, *,
        worker_port = None, queue_limit = None, queue_bytes = None, max_message_size = None,
        curve_secret_key = None, curve_authorized_keys = None,
        curve_worker_authorized_keys = None, worker_secret = None, retry_window = None,
        shutdown_grace = None, spin_us = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        password: String,
        server_name: String,
        host: Option<String>,
        port: Option<u16>,
        timeout: Option<u64>,
        workers: Option<usize>,
        worker_port: Option<u16>,
        queue_limit: Option<usize>,
        queue_bytes: Option<usize>,
        max_message_size: Option<usize>,
        curve_secret_key: Option<String>,
        curve_authorized_keys: Option<PathBuf>,
        curve_worker_authorized_keys: Option<PathBuf>,
        worker_secret: Option<String>,
        retry_window: Option<u64>,
        shutdown_grace: Option<u64>,
        spin_us: Option<u64>,
    ) -> PyServer {
        let s = RpcServer::new(password, server_name);
        let s = set(s, host, |s, v| s.host(&v));
        let s = set(s, port, RpcServer::port);
        let s = set(s, timeout.map(ms), RpcServer::timeout);
        let s = set(s, workers, RpcServer::workers);
        let s = set(s, worker_port, RpcServer::worker_port);
        let s = set(s, queue_limit, RpcServer::queue_limit);
        let s = set(s, queue_bytes, RpcServer::queue_bytes);
        let s = set(s, max_message_size, RpcServer::max_message_size);
        let s = set(s, curve_secret_key, |s, v| s.curve_secret_key(&v));
        let s = set(s, curve_authorized_keys, RpcServer::curve_authorized_keys);
        let s = set(
            s,
            curve_worker_authorized_keys,
            RpcServer::curve_worker_authorized_keys,
        );
        let s = set(s, worker_secret, |s, v| s.worker_secret(&v));
        let s = set(s, retry_window.map(ms), RpcServer::retry_window);
        let s = set(s, shutdown_grace.map(ms), RpcServer::shutdown_grace);
        let s = set(s, spin_us.map(Duration::from_micros), RpcServer::spin);
        PyServer {
            builder: Mutex::new(Some(s)),
        }
    }

    /// Registers `func` under `alias` (default: its `__name__`). Its docstring becomes
    /// the description and its parameter names allow keyword arguments, unless
    /// `description` or `params` say otherwise.
    #[pyo3(signature = (func, alias = None, *, description = None, params = None, idempotent = false))]
    fn add_external_function(
        &self,
        func: &Bound<'_, PyAny>,
        alias: Option<String>,
        description: Option<String>,
        params: Option<Vec<String>>,
        idempotent: bool,
    ) -> PyResult<()> {
        add_function(&self.builder, func, alias, description, params, idempotent)
    }

    /// Binds and starts serving in background threads; returns once it serves. Use the
    /// result as a context manager, or call its `shutdown()`.
    fn start(&self, py: Python<'_>) -> PyResult<RunningServer> {
        let server = take_builder(&self.builder)?;
        let handle = py
            .allow_threads(|| server.start())
            .map_err(|e| to_pyerr(py, e))?;
        Ok(RunningServer {
            port: handle.port(),
            endpoint: handle.endpoint().to_owned(),
            worker_port: handle.worker_port(),
            slot: track(Running::Server(handle)),
        })
    }

    /// Starts and serves until Ctrl-C or SIGTERM, then shuts down cleanly and returns.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        let running = self.start(py)?;
        serve(py, Arc::clone(&running.slot))
    }
}

/// A server started by `RPCServer.start()`; stops on `shutdown()`, at the end of a
/// `with` block, or when the interpreter exits.
#[pyclass(module = "zmq_rpc", frozen)]
pub(crate) struct RunningServer {
    slot: Slot,
    /// The bound client port (useful after `port=0`).
    #[pyo3(get)]
    port: u16,
    /// The bound client endpoint.
    #[pyo3(get)]
    endpoint: String,
    /// The bound TCP port for worker processes, if one was asked for.
    #[pyo3(get)]
    worker_port: Option<u16>,
}

#[pymethods]
impl RunningServer {
    /// Stops gracefully: running calls get the shutdown grace to finish.
    fn shutdown(&self, py: Python<'_>) {
        stop(py, &self.slot);
    }

    /// Whether the server has stopped.
    fn is_finished(&self) -> bool {
        is_finished(&self.slot)
    }

    /// How many malformed or unexpected messages from worker processes the broker has
    /// dropped (each is also logged).
    fn dropped_messages(&self) -> u64 {
        dropped_messages(&self.slot)
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        serve(py, Arc::clone(&self.slot))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        stop(py, &self.slot);
        false
    }
}

/// A worker process's connection to a standalone broker (`zmq-rpc broker` or `Broker`).
///
/// `Worker(password, host="localhost", port=8422)`; the keyword-only options are the
/// Rust `Worker`'s setters (`None`: the environment or the Rust default). Durations
/// are in milliseconds.
#[pyclass(name = "Worker", module = "zmq_rpc", frozen)]
pub(crate) struct PyWorker {
    builder: Mutex<Option<Worker>>,
}

#[pymethods]
impl PyWorker {
    #[new]
    #[pyo3(signature = (
        password, host = zmq_rpc::config::DEFAULT_HOST.to_owned(),
        port = zmq_rpc::config::DEFAULT_WORKER_PORT, *, endpoint = None, threads = None,
        name = None, heartbeat_interval = None, heartbeat_liveness = None,
        shutdown_grace = None, max_message_size = None, curve_server_key = None,
        curve_keypair = None, worker_secret = None
    ),
    text_signature = "(password, host='localhost', port=8422, *, endpoint=None, threads=None, \
        name=None, heartbeat_interval=None, heartbeat_liveness=None, shutdown_grace=None, \
        max_message_size=None, curve_server_key=None, curve_keypair=None, worker_secret=None)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        password: String,
        host: String,
        port: u16,
        endpoint: Option<String>,
        threads: Option<usize>,
        name: Option<String>,
        heartbeat_interval: Option<u64>,
        heartbeat_liveness: Option<u32>,
        shutdown_grace: Option<u64>,
        max_message_size: Option<usize>,
        curve_server_key: Option<String>,
        curve_keypair: Option<(String, String)>,
        worker_secret: Option<String>,
    ) -> PyWorker {
        let w = match endpoint {
            Some(e) => Worker::with_endpoint(password, &e),
            None => Worker::new(password, &host, port),
        };
        let w = set(w, threads, Worker::threads);
        let w = set(w, name, Worker::name);
        let w = set(w, heartbeat_interval.map(ms), Worker::heartbeat_interval);
        let w = set(w, heartbeat_liveness, Worker::heartbeat_liveness);
        let w = set(w, shutdown_grace.map(ms), Worker::shutdown_grace);
        let w = set(w, max_message_size, Worker::max_message_size);
        let w = set(w, curve_server_key, Worker::curve_server_key);
        let w = set(w, curve_keypair, |w, (public, secret)| {
            w.curve_keypair(public, secret)
        });
        let w = set(w, worker_secret, Worker::worker_secret);
        PyWorker {
            builder: Mutex::new(Some(w)),
        }
    }

    /// Registers `func`; as `RPCServer.add_external_function`.
    #[pyo3(signature = (func, alias = None, *, description = None, params = None, idempotent = false))]
    fn add_external_function(
        &self,
        func: &Bound<'_, PyAny>,
        alias: Option<String>,
        description: Option<String>,
        params: Option<Vec<String>>,
        idempotent: bool,
    ) -> PyResult<()> {
        add_function(&self.builder, func, alias, description, params, idempotent)
    }

    /// Connects and serves in background threads.
    fn start(&self, py: Python<'_>) -> PyResult<RunningWorker> {
        let worker = take_builder(&self.builder)?;
        let handle = py
            .allow_threads(|| worker.start())
            .map_err(|e| to_pyerr(py, e))?;
        Ok(RunningWorker {
            slot: track(Running::Worker(handle)),
            refused: Mutex::new(None),
        })
    }

    /// Serves until Ctrl-C or SIGTERM, then lets running calls finish and leaves.
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        let running = self.start(py)?;
        serve(py, Arc::clone(&running.slot))
    }

    /// The same as `run()`, under the server's name.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py)
    }
}

/// A worker started by `Worker.start()`.
#[pyclass(module = "zmq_rpc", frozen)]
pub(crate) struct RunningWorker {
    slot: Slot,
    /// The refusal, kept once `wait()` has taken the handle.
    refused: Mutex<Option<zmq_rpc::Error>>,
}

#[pymethods]
impl RunningWorker {
    /// Serves until Ctrl-C or SIGTERM, then shuts the worker down (Rust: `run_until_signal`).
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        serve(py, Arc::clone(&self.slot))
    }

    /// Drains: no new calls, running ones finish, then it leaves the broker.
    fn shutdown(&self, py: Python<'_>) {
        stop(py, &self.slot);
    }

    /// Whether the worker has stopped (by `shutdown()`, or by itself when refused).
    fn is_finished(&self) -> bool {
        is_finished(&self.slot)
    }

    /// Why the broker refused this worker (a `PermissionError`), or `None`: its CURVE
    /// key is not on the broker's allow-list, the broker's key is wrong, or its worker
    /// secret is wrong. A refused worker stops by itself.
    fn refusal(&self, py: Python<'_>) -> Option<PyErr> {
        refusal(&self.slot)
            .or_else(|| lock(&self.refused).clone())
            .map(|e| to_pyerr(py, e))
    }

    /// Blocks until the worker stops: by itself only when the broker refuses it (then
    /// this raises `PermissionError`), or when another thread calls `shutdown()`.
    /// `timeout` (ms): raise `TimeoutError` if it still runs by then. Ctrl-C interrupts.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<u64>) -> PyResult<()> {
        let deadline = timeout.map(|t| Instant::now() + ms(t));
        while !is_finished(&self.slot) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(PyTimeoutError::new_err("the worker still runs"));
            }
            py.allow_threads(|| std::thread::sleep(WAIT_POLL));
            py.check_signals()?;
        }
        if let Some(Running::Worker(handle)) = take(&self.slot) {
            let outcome = py.allow_threads(|| {
                let refused = handle.refusal();
                (handle.wait(), refused)
            });
            *lock(&self.refused) = outcome.1;
            outcome.0.map_err(|e| to_pyerr(py, e))?;
        }
        match self.refusal(py) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        stop(py, &self.slot);
        false
    }
}

/// A standalone broker, as `zmq-rpc broker` runs it: clients on `port` (8421), worker
/// processes on `worker_port` (8422).
///
/// The keyword-only options are the Rust `Broker`'s setters (`None`: the environment
/// or the Rust default). Durations are in milliseconds.
#[pyclass(name = "Broker", module = "zmq_rpc", frozen)]
pub(crate) struct PyBroker {
    builder: Mutex<Option<Broker>>,
}

#[pymethods]
impl PyBroker {
    #[new]
    #[pyo3(signature = (
        password, name, *, host = None, port = None, worker_port = None, timeout = None,
        queue_limit = None, queue_bytes = None, max_message_size = None,
        heartbeat_liveness = None,
        curve_secret_key = None, curve_authorized_keys = None,
        curve_worker_authorized_keys = None, worker_secret = None, retry_window = None,
        shutdown_grace = None, warmup = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        password: String,
        name: String,
        host: Option<String>,
        port: Option<u16>,
        worker_port: Option<u16>,
        timeout: Option<u64>,
        queue_limit: Option<usize>,
        queue_bytes: Option<usize>,
        max_message_size: Option<usize>,
        heartbeat_liveness: Option<u32>,
        curve_secret_key: Option<String>,
        curve_authorized_keys: Option<PathBuf>,
        curve_worker_authorized_keys: Option<PathBuf>,
        worker_secret: Option<String>,
        retry_window: Option<u64>,
        shutdown_grace: Option<u64>,
        warmup: Option<u64>,
    ) -> PyBroker {
        let b = Broker::new(password, name);
        let b = set(b, host, |b, v| b.host(&v));
        let b = set(b, port, Broker::port);
        let b = set(b, worker_port, Broker::worker_port);
        let b = set(b, timeout.map(ms), Broker::timeout);
        let b = set(b, queue_limit, Broker::queue_limit);
        let b = set(b, queue_bytes, Broker::queue_bytes);
        let b = set(b, max_message_size, Broker::max_message_size);
        let b = set(b, heartbeat_liveness, Broker::heartbeat_liveness);
        let b = set(b, curve_secret_key, |b, v| b.curve_secret_key(&v));
        let b = set(b, curve_authorized_keys, Broker::curve_authorized_keys);
        let b = set(
            b,
            curve_worker_authorized_keys,
            Broker::curve_worker_authorized_keys,
        );
        let b = set(b, worker_secret, |b, v| b.worker_secret(&v));
        let b = set(b, retry_window.map(ms), Broker::retry_window);
        let b = set(b, shutdown_grace.map(ms), Broker::shutdown_grace);
        let b = set(b, warmup.map(ms), Broker::warmup);
        PyBroker {
            builder: Mutex::new(Some(b)),
        }
    }

    /// Binds both endpoints and starts the broker thread.
    fn start(&self, py: Python<'_>) -> PyResult<RunningBroker> {
        let broker = take_builder(&self.builder)?;
        let handle = py
            .allow_threads(|| broker.start())
            .map_err(|e| to_pyerr(py, e))?;
        Ok(RunningBroker {
            client_endpoint: handle.client_endpoint().to_owned(),
            client_port: handle.client_port(),
            worker_endpoint: handle.worker_endpoint().map(str::to_owned),
            worker_port: handle.worker_port(),
            slot: track(Running::Broker(handle)),
        })
    }

    /// Starts and serves until Ctrl-C or SIGTERM, then shuts down.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        let running = self.start(py)?;
        serve(py, Arc::clone(&running.slot))
    }
}

/// A broker started by `Broker.start()`.
#[pyclass(module = "zmq_rpc", frozen)]
pub(crate) struct RunningBroker {
    slot: Slot,
    /// The bound client endpoint.
    #[pyo3(get)]
    client_endpoint: String,
    /// The bound client port.
    #[pyo3(get)]
    client_port: u16,
    /// The bound worker endpoint.
    #[pyo3(get)]
    worker_endpoint: Option<String>,
    /// The bound worker port.
    #[pyo3(get)]
    worker_port: Option<u16>,
}

#[pymethods]
impl RunningBroker {
    /// Serves until Ctrl-C or SIGTERM, then shuts the broker down (Rust: `run_until_signal`).
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        serve(py, Arc::clone(&self.slot))
    }

    /// How many workers are registered now.
    fn worker_count(&self) -> usize {
        match &*lock(&self.slot) {
            Some(Running::Broker(h)) => h.worker_count(),
            _ => 0,
        }
    }

    /// How many malformed or unexpected messages from workers the broker has dropped
    /// (each is also logged).
    fn dropped_messages(&self) -> u64 {
        dropped_messages(&self.slot)
    }

    /// Stops gracefully.
    fn shutdown(&self, py: Python<'_>) {
        stop(py, &self.slot);
    }

    /// Whether the broker has stopped.
    fn is_finished(&self) -> bool {
        is_finished(&self.slot)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        stop(py, &self.slot);
        false
    }
}

/// Stops what a handle still runs when Python drops it, with the GIL released (a
/// running Python function may need it to finish).
macro_rules! stop_on_drop {
    ($($t:ty),*) => {$(
        impl Drop for $t {
            fn drop(&mut self) {
                if let Some(running) = take(&self.slot) {
                    Python::with_gil(|py| py.allow_threads(|| running.shutdown()));
                }
            }
        }
    )*};
}
stop_on_drop!(RunningServer, RunningWorker, RunningBroker);
