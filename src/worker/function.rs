//! Registered functions: typed Rust functions and raw JSON ones, behind one handler type.
//!
//! A typed function `fn add(a: i64, b: i64) -> i64` becomes a handler that binds the
//! call's positional and keyword arguments to its parameters, converts each from JSON,
//! calls it and converts the result back. Conversion failures are `TypeError`s; an `Err`
//! returned by the function is a `RuntimeError` with its message.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::protocol::{self, Call, FunctionInfo};

type TypedFn = dyn Fn(Vec<Value>) -> Result<Value, Error> + Send + Sync;
type RawFn = dyn Fn(Vec<Value>, Map<String, Value>) -> Result<Value, Error> + Send + Sync;

#[derive(Clone)]
enum Handler {
    Typed(Arc<TypedFn>),
    Raw(Arc<RawFn>),
}

/// A function's result as it goes on the wire: implemented for the common
/// serializable types, for [`Json`] (any `Serialize` type) and for
/// `Result<T: Serialize, E: Display>` (an `Err` becomes a `RuntimeError`).
pub trait IntoOutcome {
    /// Converts into the reply's result or error.
    fn into_outcome(self) -> Result<Value, Error>;
}

/// Wraps any `Serialize` type as a function result: `fn point() -> Json<Point>`.
/// (Plain returns are implemented for std types; a `Result<Point, E>` needs no wrapper.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

fn encode<T: Serialize>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value)
        .map_err(|e| Error::Runtime(format!("the result cannot be encoded as JSON: {e}")))
}

impl<T: Serialize> IntoOutcome for Json<T> {
    fn into_outcome(self) -> Result<Value, Error> {
        encode(&self.0)
    }
}

impl<T: Serialize, E: Display> IntoOutcome for Result<T, E> {
    fn into_outcome(self) -> Result<Value, Error> {
        match self {
            Ok(v) => encode(&v),
            Err(e) => Err(Error::Runtime(e.to_string())),
        }
    }
}

macro_rules! plain_outcome {
    ($($t:ty),*) => {$(
        impl IntoOutcome for $t {
            fn into_outcome(self) -> Result<Value, Error> { encode(&self) }
        }
    )*};
}
plain_outcome!(
    (),
    bool,
    char,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    f32,
    f64,
    &'static str
);

// Moved, not serialized: `encode` would copy the text (a 1 MiB echo spent a copy of its
// result here).
impl IntoOutcome for String {
    fn into_outcome(self) -> Result<Value, Error> {
        Ok(Value::String(self))
    }
}
impl IntoOutcome for Value {
    fn into_outcome(self) -> Result<Value, Error> {
        Ok(self)
    }
}

impl<T: Serialize> IntoOutcome for Vec<T> {
    fn into_outcome(self) -> Result<Value, Error> {
        encode(&self)
    }
}
impl<T: Serialize> IntoOutcome for Option<T> {
    fn into_outcome(self) -> Result<Value, Error> {
        encode(&self)
    }
}
impl<K: Serialize, V: Serialize, S> IntoOutcome for HashMap<K, V, S> {
    fn into_outcome(self) -> Result<Value, Error> {
        encode_map(self.iter())
    }
}
impl<K: Serialize, V: Serialize> IntoOutcome for BTreeMap<K, V> {
    fn into_outcome(self) -> Result<Value, Error> {
        encode_map(self.iter())
    }
}

fn encode_map<'a, K: Serialize + 'a, V: Serialize + 'a>(
    entries: impl Iterator<Item = (&'a K, &'a V)>,
) -> Result<Value, Error> {
    let mut map = Map::new();
    for (k, v) in entries {
        let key = match encode(k)? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        map.insert(key, encode(v)?);
    }
    Ok(Value::Object(map))
}

macro_rules! tuple_outcome {
    ($($name:ident),+) => {
        impl<$($name: Serialize),+> IntoOutcome for ($($name,)+) {
            fn into_outcome(self) -> Result<Value, Error> { encode(&self) }
        }
    };
}
tuple_outcome!(A);
tuple_outcome!(A, B);
tuple_outcome!(A, B, C);
tuple_outcome!(A, B, C, D);

/// A Rust function or closure that can be registered: `Fn(A1, ..., An) -> R` for up
/// to eight parameters, each `DeserializeOwned`, with `R:` [`IntoOutcome`].
///
/// `Args` is a marker that lets one trait cover every arity; callers never name it.
pub trait IntoFunction<Args>: Send + Sync + 'static {
    /// Number of parameters.
    fn arity(&self) -> u32;
    #[doc(hidden)]
    fn into_typed(self) -> Arc<TypedFn>;
}

fn convert<T: DeserializeOwned>(index: usize, value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| {
        // serde's message quotes the value: keep it short.
        let e = crate::protocol::excerpt(&e.to_string());
        Error::Type(format!("argument {} does not fit: {e}", index + 1))
    })
}

macro_rules! typed_function {
    ($n:expr; $($arg:ident),*) => {
        impl<F, R, $($arg),*> IntoFunction<(R, $($arg,)*)> for F
        where
            F: Fn($($arg),*) -> R + Send + Sync + 'static,
            R: IntoOutcome,
            $($arg: DeserializeOwned,)*
        {
            fn arity(&self) -> u32 { $n }
            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn into_typed(self) -> Arc<TypedFn> {
                Arc::new(move |args: Vec<Value>| {
                    let mut it = args.into_iter().enumerate();
                    $(
                        let (i, v) = it.next().unwrap_or((0, Value::Null));
                        let $arg: $arg = convert(i, v)?;
                    )*
                    (self)($($arg),*).into_outcome()
                })
            }
        }
    };
}
typed_function!(0;);
typed_function!(1; A1);
typed_function!(2; A1, A2);
typed_function!(3; A1, A2, A3);
typed_function!(4; A1, A2, A3, A4);
typed_function!(5; A1, A2, A3, A4, A5);
typed_function!(6; A1, A2, A3, A4, A5, A6);
typed_function!(7; A1, A2, A3, A4, A5, A6, A7);
typed_function!(8; A1, A2, A3, A4, A5, A6, A7, A8);

/// One registered function.
#[derive(Clone)]
pub(crate) struct Function {
    pub(crate) info: FunctionInfo,
    handler: Handler,
    /// Run on the broker thread (see [`Registration::direct`]).
    direct: bool,
}

/// Options of a registered function, returned by `add_external_function`.
///
/// ```
/// # let mut server = zmq_rpc::RpcServer::new("pw", "demo");
/// server
///     .add_external_function(|a: i64, b: i64| a + b, "add")
///     .description("Adds two numbers.")
///     .params(["a", "b"])
///     .idempotent(true);
/// ```
pub struct Registration<'a> {
    function: &'a mut Function,
}

impl Registration<'_> {
    /// The function's description, shown by `list_functions` (the seed's docstring).
    /// Defaults to none.
    pub fn description(&mut self, text: impl Into<String>) -> &mut Self {
        self.function.info.description = text.into();
        self
    }

    /// Parameter names, in order; lets callers pass keyword arguments. Defaults to
    /// none (positional arguments only).
    pub fn params<I, S>(&mut self, names: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.function.info.param_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Whether a call may run again on another worker when its worker is lost.
    /// Defaults to `false`.
    pub fn idempotent(&mut self, yes: bool) -> &mut Self {
        self.function.info.idempotent = yes;
        self
    }

    /// Runs the function on the server's broker thread instead of a worker thread:
    /// the call is answered without a hand-off between threads, which saves tens of
    /// microseconds per call on an idle machine (`docs/performance.md`).
    ///
    /// Only for functions that return within microseconds and never block (no I/O, no
    /// locks held long, no sleeping): while one runs, the server answers nobody else.
    /// As a safeguard, a direct call that takes longer than 1 ms is logged and the
    /// function runs on the worker threads from then on. Only an [`RpcServer`] runs
    /// functions directly; a [`Worker`] process refuses to start with one. Defaults to
    /// `false`.
    ///
    /// [`RpcServer`]: crate::RpcServer
    /// [`Worker`]: crate::Worker
    pub fn direct(&mut self, yes: bool) -> &mut Self {
        self.function.direct = yes;
        self
    }
}

/// The functions a worker (or server) serves, by alias.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    functions: Vec<Function>,
    /// A problem found while registering, reported when the worker starts.
    problem: Option<Error>,
}

impl Registry {
    fn insert(&mut self, alias: &str, params: Option<u32>, handler: Handler) -> Registration<'_> {
        if protocol::RESERVED_NAMES.contains(&alias) {
            self.problem.get_or_insert(Error::Config(format!(
                "'{alias}' is a reserved name (built-ins: {})",
                protocol::RESERVED_NAMES.join(", ")
            )));
        }
        if alias.is_empty() {
            self.problem
                .get_or_insert(Error::Config("a function alias cannot be empty".into()));
        }
        let function = Function {
            info: FunctionInfo {
                name: alias.to_owned(),
                params,
                ..FunctionInfo::default()
            },
            handler,
            direct: false,
        };
        let index = match self.functions.iter().position(|f| f.info.name == alias) {
            Some(i) => {
                self.problem.get_or_insert(Error::Config(format!(
                    "the alias '{alias}' is registered twice"
                )));
                self.functions[i] = function;
                i
            }
            None => {
                self.functions.push(function);
                self.functions.len() - 1
            }
        };
        Registration {
            function: &mut self.functions[index],
        }
    }

    pub(crate) fn add_typed<F, Args>(&mut self, func: F, alias: &str) -> Registration<'_>
    where
        F: IntoFunction<Args>,
    {
        let arity = func.arity();
        self.insert(alias, Some(arity), Handler::Typed(func.into_typed()))
    }

    pub(crate) fn add_raw<F, R>(&mut self, func: F, alias: &str) -> Registration<'_>
    where
        F: Fn(Vec<Value>, Map<String, Value>) -> R + Send + Sync + 'static,
        R: IntoOutcome,
    {
        let raw: Arc<RawFn> = Arc::new(move |args, kwargs| func(args, kwargs).into_outcome());
        self.insert(alias, None, Handler::Raw(raw))
    }

    /// The registry, or the first registration problem.
    pub(crate) fn validated(&self) -> Result<&Registry, Error> {
        match &self.problem {
            Some(e) => Err(e.clone()),
            None if self.functions.is_empty() => {
                Err(Error::Config("no functions are registered".into()))
            }
            None => Ok(self),
        }
    }

    pub(crate) fn infos(&self) -> Vec<FunctionInfo> {
        self.functions.iter().map(|f| f.info.clone()).collect()
    }

    /// The descriptions of the functions registered with `direct` (`true`) or without.
    pub(crate) fn infos_where_direct(&self, direct: bool) -> Vec<FunctionInfo> {
        self.functions
            .iter()
            .filter(|f| f.direct == direct)
            .map(|f| f.info.clone())
            .collect()
    }

    /// Runs a call. Never panics: a panic in the function becomes a `RuntimeError`.
    pub(crate) fn run(&self, call: Call) -> Result<Value, Error> {
        let Some(f) = self.functions.iter().find(|f| f.info.name == call.function) else {
            return Err(Error::Name(format!(
                "no function named '{}' is registered",
                crate::protocol::excerpt(&call.function)
            )));
        };
        let handler = f.handler.clone();
        let info = &f.info;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match handler {
            Handler::Raw(h) => h(call.args, call.kwargs),
            Handler::Typed(h) => h(bind_arguments(info, call.args, call.kwargs)?),
        }));
        outcome.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Runtime(format!("'{}' panicked: {what}", info.name)))
        })
    }
}

/// Lines up positional and keyword arguments with a typed function's parameters.
/// A missing trailing argument is passed as `null`, so `Option` parameters are optional.
fn bind_arguments(
    info: &FunctionInfo,
    mut args: Vec<Value>,
    kwargs: Map<String, Value>,
) -> Result<Vec<Value>, Error> {
    let arity = info.params.unwrap_or(0) as usize;
    let name = &info.name;
    if args.len() > arity {
        return Err(Error::Type(format!(
            "{name}() takes {arity} positional argument(s) but {} were given",
            args.len()
        )));
    }
    let given = args.len();
    args.resize(arity, Value::Null);
    let mut filled = vec![false; arity];
    filled[..given].fill(true);
    for (key, value) in kwargs {
        let Some(pos) = info.param_names.iter().position(|p| *p == key) else {
            return Err(Error::Type(if info.param_names.is_empty() {
                format!("{name}() takes no keyword arguments (no parameter names were declared)")
            } else {
                let key = crate::protocol::excerpt(&key);
                format!("{name}() got an unexpected keyword argument '{key}'")
            }));
        };
        if pos >= arity || filled[pos] {
            let key = crate::protocol::excerpt(&key);
            return Err(Error::Type(format!(
                "{name}() got multiple values for argument '{key}'"
            )));
        }
        args[pos] = value;
        filled[pos] = true;
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(function: &str, args: Value, kwargs: Value) -> Call {
        Call {
            function: function.into(),
            args: serde_json::from_value(args).unwrap(),
            kwargs: serde_json::from_value(kwargs).unwrap(),
            timeout_ms: None,
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.add_typed(|a: i64, b: i64| a + b, "add")
            .params(["a", "b"]);
        r.add_typed(
            |a: f64, b: f64| -> Result<f64, String> {
                if b == 0.0 {
                    Err("division by zero".into())
                } else {
                    Ok(a / b)
                }
            },
            "div",
        );
        r.add_typed(
            |name: Option<String>| format!("hi {}", name.unwrap_or_default()),
            "hi",
        );
        r.add_typed(|| -> u8 { panic!("kaputt") }, "boom");
        r.add_raw(
            |args, kwargs| json!({"n": args.len(), "k": kwargs.len()}),
            "raw",
        );
        r
    }

    #[test]
    fn typed_functions_convert_arguments_and_results() {
        let r = registry();
        assert_eq!(r.run(call("add", json!([5, 7]), json!({}))), Ok(json!(12)));
        assert_eq!(
            r.run(call("add", json!([5]), json!({"b": 7}))),
            Ok(json!(12))
        );
        assert_eq!(r.run(call("hi", json!([]), json!({}))), Ok(json!("hi ")));
        assert_eq!(
            r.run(call("div", json!([1, 0]), json!({}))),
            Err(Error::Runtime("division by zero".into()))
        );
        assert_eq!(
            r.run(call("raw", json!([1, 2, 3]), json!({"x": 1}))),
            Ok(json!({"n": 3, "k": 1}))
        );
    }

    #[test]
    fn arguments_that_do_not_fit_are_type_errors() {
        let r = registry();
        for (args, kwargs) in [
            (json!([1, 2, 3]), json!({})),
            (json!(["x", 2]), json!({})),
            (json!([1]), json!({"c": 2})),
            (json!([1]), json!({"a": 2})),
            (json!([]), json!({})),
        ] {
            let got = r.run(call("add", args.clone(), kwargs.clone()));
            assert!(
                matches!(got, Err(Error::Type(_))),
                "{args} {kwargs}: {got:?}"
            );
        }
        assert!(
            matches!(r.run(call("div", json!([1]), json!({"b": 1}))), Err(Error::Type(m)) if m.contains("no keyword"))
        );
    }

    #[test]
    fn a_panic_becomes_a_runtime_error() {
        let got = registry().run(call("boom", json!([]), json!({})));
        assert_eq!(got, Err(Error::Runtime("'boom' panicked: kaputt".into())));
    }

    #[test]
    fn registration_problems_are_kept_for_start() {
        let mut r = Registry::default();
        r.add_typed(|| 1, "ping");
        assert!(r.validated().is_err());
        let mut r = Registry::default();
        r.add_typed(|| 1, "a");
        r.add_typed(|| 2, "a");
        assert!(r.validated().is_err());
        assert!(Registry::default().validated().is_err());
    }
}
