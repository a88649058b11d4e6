//! The Python extension `zmq_rpc._native`: the seed's `RPCServer` and `RPCClient`, and
//! the rest of zmq-rpc, on the Rust core.
//!
//! The binding converts types and nothing else: JSON values to Python objects and back
//! (`convert`), errors to exceptions (`error`), Python callables to raw functions run by
//! the Rust worker threads (`function`), and builders to keyword arguments (`client`,
//! `serve`). Every wait releases the GIL.

mod client;
mod convert;
mod error;
mod function;
mod pending;
mod serve;

use pyo3::prelude::*;

/// A new CURVE key pair `(public, secret)`, both Z85 text.
#[pyfunction]
fn generate_curve_keypair(py: Python<'_>) -> PyResult<(String, String)> {
    zmq_rpc::generate_curve_keypair().map_err(|e| error::to_pyerr(py, e))
}

/// Whether this libzmq can encrypt with CURVE.
#[pyfunction]
fn curve_available() -> bool {
    zmq_rpc::curve_available()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::PyClient>()?;
    m.add_class::<client::RemoteMethod>()?;
    m.add_class::<client::PyPending>()?;
    m.add_class::<serve::PyServer>()?;
    m.add_class::<serve::RunningServer>()?;
    m.add_class::<serve::PyWorker>()?;
    m.add_class::<serve::RunningWorker>()?;
    m.add_class::<serve::PyBroker>()?;
    m.add_class::<serve::RunningBroker>()?;
    m.add_function(wrap_pyfunction!(generate_curve_keypair, m)?)?;
    m.add_function(wrap_pyfunction!(curve_available, m)?)?;
    m.add_function(wrap_pyfunction!(serve::_shutdown_all, m)?)?;
    m.add("LIBZMQ_BUILT_WITH_CURVE", zmq_rpc::LIBZMQ_BUILT_WITH_CURVE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    error::register(m)?;
    Ok(())
}
