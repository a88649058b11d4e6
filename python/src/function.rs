//! Python functions as zmq-rpc raw functions, run on the Rust worker threads.
//!
//! Each call takes the GIL for as long as the Python function runs and converts the
//! JSON arguments and result; a function that releases the GIL itself (`time.sleep`,
//! I/O) lets the other worker threads run Python meanwhile.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde_json::{Map, Value};
use zmq_rpc::{Error, IntoOutcome, Registration};

use crate::convert::{to_json, to_py};

/// A registered Python callable with what `list_functions` shows about it.
pub(crate) struct PythonFunction {
    func: Py<PyAny>,
    pub(crate) alias: String,
    description: String,
    params: Vec<String>,
    idempotent: bool,
}

/// A call's outcome with its error kind kept (a plain `Result` would turn every error
/// into a `RuntimeError`).
pub(crate) struct Outcome(Result<Value, Error>);

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Result<Value, Error> {
        self.0
    }
}

impl PythonFunction {
    /// Reads what introspection needs from `func`: its docstring (unless `description`
    /// is given) and its parameter names (unless `params` is given).
    pub(crate) fn new(
        func: &Bound<'_, PyAny>,
        alias: Option<String>,
        description: Option<String>,
        params: Option<Vec<String>>,
        idempotent: bool,
    ) -> PyResult<PythonFunction> {
        let py = func.py();
        if !func.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "{} is not callable",
                func.get_type().name()?
            )));
        }
        let alias = match alias {
            Some(a) => a,
            None => func.getattr("__name__")?.extract()?,
        };
        let inspect = py.import("inspect")?;
        let description = match description {
            Some(d) => d,
            None => inspect
                .call_method1("getdoc", (func,))?
                .extract::<Option<String>>()?
                .unwrap_or_default(),
        };
        let params = match params {
            Some(p) => p,
            None => keyword_names(&inspect, func).unwrap_or_default(),
        };
        Ok(PythonFunction {
            func: func.clone().unbind(),
            alias,
            description,
            params,
            idempotent,
        })
    }

    /// Registers with a server or worker (whose `add_raw_function` made `registration`).
    pub(crate) fn describe(&self, registration: &mut Registration<'_>) {
        registration
            .description(self.description.clone())
            .params(self.params.clone())
            .idempotent(self.idempotent);
    }

    /// The handler that the worker threads run.
    pub(crate) fn handler(
        &self,
    ) -> impl Fn(Vec<Value>, Map<String, Value>) -> Outcome + Send + Sync + 'static {
        let func = Python::with_gil(|py| self.func.clone_ref(py));
        move |args, kwargs| Outcome(Python::with_gil(|py| call(py, &func, &args, &kwargs)))
    }
}

/// Names that can be passed by keyword, in order.
fn keyword_names(inspect: &Bound<'_, PyModule>, func: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let signature = inspect.call_method1("signature", (func,))?;
    let parameter = inspect.getattr("Parameter")?;
    let by_keyword = [
        parameter.getattr("POSITIONAL_OR_KEYWORD")?,
        parameter.getattr("KEYWORD_ONLY")?,
    ];
    let mut names = Vec::new();
    for p in signature
        .getattr("parameters")?
        .call_method0("values")?
        .try_iter()?
    {
        let p = p?;
        let kind = p.getattr("kind")?;
        if by_keyword.iter().any(|k| k.eq(&kind).unwrap_or(false)) {
            names.push(p.getattr("name")?.extract()?);
        }
    }
    Ok(names)
}

fn call(
    py: Python<'_>,
    func: &Py<PyAny>,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Value, Error> {
    let converted = (|| -> PyResult<_> {
        let items = args
            .iter()
            .map(|a| to_py(py, a))
            .collect::<PyResult<Vec<_>>>()?;
        let args = PyTuple::new(py, items)?;
        let kw = PyDict::new(py);
        for (k, v) in kwargs {
            kw.set_item(k, to_py(py, v)?)?;
        }
        Ok((args, kw))
    })();
    let (args, kw) = converted.map_err(|e| Error::Type(e.value(py).to_string()))?;
    match func.bind(py).call(args, Some(&kw)) {
        Ok(result) => to_json(&result).map_err(|e| {
            Error::Runtime(format!(
                "the result cannot be encoded as JSON: {}",
                e.value(py)
            ))
        }),
        Err(e) => Err(exception_to_error(py, &e)),
    }
}

/// A `TypeError` raised before the function's first line ran (no traceback: the
/// arguments did not bind) is the caller's mistake, wire `TypeError`; anything the
/// function raised is a `RuntimeError` with `"ExceptionType: message"`.
fn exception_to_error(py: Python<'_>, e: &PyErr) -> Error {
    let message = e.value(py).to_string();
    if e.is_instance_of::<PyTypeError>(py) && e.traceback(py).is_none() {
        return Error::Type(message);
    }
    let kind = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    if message.is_empty() {
        Error::Runtime(kind)
    } else {
        Error::Runtime(format!("{kind}: {message}"))
    }
}
