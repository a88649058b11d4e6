//! Registered functions end to end: typed adapters of every kind of parameter and
//! result, raw functions, keyword arguments, the built-ins, panics, registration errors
//! and the `remote_interface!` stubs.

mod common;

use std::time::Duration;

use common::{client, register_seed, with_timeout, NAME, PASSWORD};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use zmq_rpc::{Error, Json, RemoteFunction, RpcServer, ServerHandle};

const LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
}

fn midpoint(a: Point, b: Point) -> Json<Point> {
    Json(Point {
        x: (a.x + b.x) / 2.0,
        y: (a.y + b.y) / 2.0,
    })
}

#[allow(clippy::too_many_arguments)]
fn sum8(a: i64, b: i64, c: i64, d: i64, e: i64, f: i64, g: i64, h: i64) -> i64 {
    a + 10 * b + 100 * c + 1_000 * d + 10_000 * e + 100_000 * f + 1_000_000 * g + 10_000_000 * h
}

/// The seed's functions plus one of each kind under test.
fn start_server() -> ServerHandle {
    let mut server = RpcServer::new(PASSWORD, NAME)
        .host("127.0.0.1")
        .port(0)
        .workers(4);
    register_seed(&mut server);
    server.add_external_function(|| 42_i64, "answer");
    server.add_external_function(|x: i64| x * x, "square");
    server.add_external_function(|x: i64, lo: i64, hi: i64| x.clamp(lo, hi), "clamp");
    server.add_external_function(sum8, "sum8");
    server.add_external_function(|a: String, b: String| a + &b, "concat");
    server.add_external_function(|xs: Vec<f64>| xs.iter().sum::<f64>(), "total");
    server.add_external_function(|n: u32| (0..n).collect::<Vec<u32>>(), "range");
    server.add_external_function(|| (), "nothing");
    server.add_external_function(|s: String| (s.len(), s.to_uppercase()), "shout");
    server
        .add_external_function(midpoint, "midpoint")
        .description("The point halfway between two points.")
        .params(["a", "b"]);
    server.add_external_function(|| -> i64 { panic!("kaputt") }, "boom");
    server.start().expect("server starts")
}

#[test]
fn typed_functions_of_several_arities() {
    with_timeout(LIMIT, || {
        let server = start_server();
        let c = client(server.port());
        assert_eq!(c.call::<i64>("answer", ()), Ok(42));
        assert_eq!(c.call::<i64>("square", (-9,)), Ok(81));
        // A single value is a one-argument call.
        assert_eq!(c.call::<i64>("square", 12), Ok(144));
        assert_eq!(c.call::<i64>("add", (5, 7)), Ok(12));
        assert_eq!(c.call::<i64>("clamp", (15, 0, 10)), Ok(10));
        assert_eq!(c.call::<i64>("clamp", (-5, 0, 10)), Ok(0));
        assert_eq!(
            c.call::<i64>("sum8", [1, 2, 3, 4, 5, 6, 7, 8]),
            Ok(87_654_321)
        );
        assert_eq!(c.call::<()>("nothing", ()), Ok(()));
        assert_eq!(c.call::<Value>("nothing", ()), Ok(Value::Null));
        assert_eq!(
            c.call::<i64>("answer", (1,)),
            Err(Error::Type(
                "answer() takes 0 positional argument(s) but 1 were given".into()
            ))
        );
    });
}

#[test]
fn strings_vectors_options_floats_and_structs() {
    with_timeout(LIMIT, || {
        let server = start_server();
        let c = client(server.port());
        assert_eq!(
            c.call::<String>("concat", ("Grüße, ", "Welt ✓")),
            Ok("Grüße, Welt ✓".to_owned())
        );
        // `(v,)` passes one list; a bare Vec would be spread into arguments.
        assert_eq!(c.call::<f64>("total", (vec![0.5, 1.25, 2.0],)), Ok(3.75));
        assert_eq!(c.call::<f64>("total", (Vec::<f64>::new(),)), Ok(0.0));
        assert_eq!(c.call::<Vec<u32>>("range", (4,)), Ok(vec![0, 1, 2, 3]));
        assert_eq!(
            c.call::<(usize, String)>("shout", ("abc",)),
            Ok((3, "ABC".to_owned()))
        );
        assert_eq!(c.call::<f64>("divide", (1.0, 8.0)), Ok(0.125));
        assert_eq!(c.call::<f64>("divide", (-3, 2)), Ok(-1.5));
        // Option parameters: left out, null, or given.
        assert_eq!(c.call::<String>("greet", ()), Ok("Hello, world!".into()));
        assert_eq!(
            c.call::<String>("greet", (Option::<String>::None,)),
            Ok("Hello, world!".into())
        );
        assert_eq!(
            c.call::<String>("greet", ("Ada",)),
            Ok("Hello, Ada!".into())
        );
        // Structs travel as JSON objects, both ways.
        let a = Point { x: 0.0, y: -2.0 };
        let b = Point { x: 3.0, y: 4.0 };
        assert_eq!(
            c.call::<Point>("midpoint", (a, b)),
            Ok(Point { x: 1.5, y: 1.0 })
        );
        assert_eq!(
            c.call_with(
                "midpoint",
                vec![json!({"x": 1, "y": 1}), json!({"x": 3, "y": 5})],
                Map::new()
            ),
            Ok(json!({"x": 2.0, "y": 3.0}))
        );
        match c.call::<Point>("midpoint", (json!({"x": 1}), b)) {
            Err(Error::Type(m)) => assert_eq!(m, "argument 1 does not fit: missing field `y`"),
            other => panic!("expected TypeError, got {other:?}"),
        }
    });
}

#[test]
fn raw_functions_get_args_and_kwargs_as_sent() {
    with_timeout(LIMIT, || {
        let server = start_server();
        let c = client(server.port());
        let mut kwargs = Map::new();
        kwargs.insert("flag".into(), json!(true));
        kwargs.insert("nested".into(), json!({"list": [1, null, "x"]}));
        assert_eq!(
            c.call_with("echo", vec![json!("a"), json!(1.5), json!(null)], kwargs),
            Ok(json!({
                "args": ["a", 1.5, null],
                "kwargs": {"flag": true, "nested": {"list": [1, null, "x"]}}
            }))
        );
        assert_eq!(
            c.call_with("echo", Vec::new(), Map::new()),
            Ok(json!({"args": [], "kwargs": {}}))
        );
        // Any number of positional arguments.
        let many: Vec<Value> = (0..50).map(Value::from).collect();
        assert_eq!(
            c.call_with("echo", many.clone(), Map::new()),
            Ok(json!({"args": many, "kwargs": {}}))
        );
    });
}

#[test]
fn keyword_arguments_after_params() {
    with_timeout(LIMIT, || {
        let server = start_server();
        let c = client(server.port());
        let kw = |pairs: &[(&str, Value)]| -> Map<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        assert_eq!(
            c.call_with("add", vec![], kw(&[("a", json!(5)), ("b", json!(7))])),
            Ok(json!(12))
        );
        assert_eq!(
            c.call_with("add", vec![json!(5)], kw(&[("b", json!(7))])),
            Ok(json!(12))
        );
        assert_eq!(
            c.call_with("add", vec![], kw(&[("b", json!(1)), ("a", json!(100))])),
            Ok(json!(101))
        );
        assert_eq!(
            c.call_with("greet", vec![], kw(&[("name", json!("Grace"))])),
            Ok(json!("Hello, Grace!"))
        );
        let p = json!({"x": 2.0, "y": 2.0});
        assert_eq!(
            c.call_with(
                "midpoint",
                vec![],
                kw(&[("b", p), ("a", json!({"x": 0, "y": 0}))])
            ),
            Ok(json!({"x": 1.0, "y": 1.0}))
        );
        assert_eq!(
            c.call_with("add", vec![json!(5)], kw(&[("a", json!(7))])),
            Err(Error::Type(
                "add() got multiple values for argument 'a'".into()
            ))
        );
        assert_eq!(
            c.call_with("add", vec![], kw(&[("a", json!(1)), ("z", json!(2))])),
            Err(Error::Type(
                "add() got an unexpected keyword argument 'z'".into()
            ))
        );
        assert_eq!(
            c.call_with("divide", vec![json!(1)], kw(&[("b", json!(2))])),
            Err(Error::Type(
                "divide() takes no keyword arguments (no parameter names were declared)".into()
            ))
        );
    });
}

#[test]
fn ping_returns_the_server_name() {
    with_timeout(LIMIT, || {
        let mut server = RpcServer::new(PASSWORD, "Rechner 2 \"ü\"")
            .host("127.0.0.1")
            .port(0)
            .workers(1);
        register_seed(&mut server);
        let server = server.start().expect("server starts");
        let c = client(server.port());
        assert_eq!(c.ping(), Ok("Rechner 2 \"ü\"".to_owned()));
        assert_eq!(
            c.call::<String>("ping", ()),
            Ok("Rechner 2 \"ü\"".to_owned())
        );
    });
}

#[test]
fn list_functions_lists_names_descriptions_and_params() {
    with_timeout(LIMIT, || {
        let mut server = RpcServer::new(PASSWORD, NAME)
            .host("127.0.0.1")
            .port(0)
            .workers(2);
        register_seed(&mut server);
        server
            .add_external_function(|x: i64| x, "identity")
            .idempotent(true);
        let server = server.start().expect("server starts");
        let f =
            |name: &str, description: &str, params: Option<u32>, names: &[&str]| RemoteFunction {
                name: name.into(),
                description: description.into(),
                params,
                param_names: names.iter().map(|n| (*n).to_owned()).collect(),
                idempotent: name == "identity",
                // Each of the server's 2 local workers registers.
                workers: 2,
            };
        assert_eq!(
            client(server.port()).list_functions(),
            Ok(vec![
                f("add", "Adds two numbers.", Some(2), &["a", "b"]),
                f("divide", "Divides; fails on zero.", Some(2), &[]),
                f("echo", "Returns its arguments.", None, &[]),
                f("greet", "Greets someone, or the world.", Some(1), &["name"]),
                f("identity", "", Some(1), &[]),
                f("mul", "Multiplies, taking 1 s.", Some(2), &["a", "b"]),
            ])
        );
    });
}

#[test]
fn a_panicking_function_is_a_runtime_error_and_the_server_keeps_serving() {
    with_timeout(LIMIT, || {
        let server = start_server();
        let c = client(server.port());
        // More panics than executor threads: none of them may take a thread down.
        for _ in 0..10 {
            assert_eq!(
                c.call::<i64>("boom", ()),
                Err(Error::Runtime("'boom' panicked: kaputt".into()))
            );
        }
        for i in 0..10 {
            assert_eq!(c.call::<i64>("square", (i,)), Ok(i * i));
        }
        assert_eq!(c.ping(), Ok(NAME.to_owned()));
    });
}

#[test]
fn registration_problems_make_start_fail_with_a_config_error() {
    with_timeout(LIMIT, || {
        let server_with = |register: &dyn Fn(&mut RpcServer)| {
            let mut server = RpcServer::new(PASSWORD, NAME).host("127.0.0.1").port(0);
            register(&mut server);
            server.start().err()
        };
        assert_eq!(
            server_with(&|s| {
                s.add_external_function(|| 1, "ping");
            }),
            Some(Error::Config(
                "'ping' is a reserved name (built-ins: ping, list_functions)".into()
            ))
        );
        assert_eq!(
            server_with(&|s| {
                s.add_external_function(common::seed::add, "add");
                s.add_raw_function(common::echo, "list_functions");
            }),
            Some(Error::Config(
                "'list_functions' is a reserved name (built-ins: ping, list_functions)".into()
            ))
        );
        assert_eq!(
            server_with(&|s| {
                s.add_external_function(common::seed::add, "add");
                s.add_external_function(common::seed::slow_multiply, "add");
            }),
            Some(Error::Config("the alias 'add' is registered twice".into()))
        );
        assert_eq!(
            server_with(&|s| {
                s.add_external_function(common::seed::add, "");
            }),
            Some(Error::Config("a function alias cannot be empty".into()))
        );
        assert_eq!(
            server_with(&|_| {}),
            Some(Error::Config("no functions are registered".into()))
        );
        // The same rules for a worker process.
        let mut worker = zmq_rpc::Worker::with_endpoint(PASSWORD, "tcp://127.0.0.1:1");
        worker.add_external_function(|| 1, "ping");
        assert_eq!(
            worker.start().err(),
            Some(Error::Config(
                "'ping' is a reserved name (built-ins: ping, list_functions)".into()
            ))
        );
    });
}

zmq_rpc::remote_interface! {
    /// The test server's functions, as typed methods.
    struct Remote {
        /// Adds.
        fn add(a: i64, b: i64) -> i64;
        /// Greets.
        fn greet(name: Option<String>) -> String;
        /// Divides.
        fn divide(a: f64, b: f64) -> f64;
        /// A function the server has.
        fn answer() -> i64;
        /// Returns a struct.
        fn midpoint(a: Point, b: Point) -> Point;
        /// A function the server does not have.
        fn missing(x: i64) -> i64;
    }
}

#[test]
fn remote_interface_stubs_call_by_method_name() {
    with_timeout(LIMIT, || {
        let server = start_server();
        let remote = Remote::new(client(server.port()));
        assert_eq!(remote.add(5, 7), Ok(12));
        assert_eq!(remote.greet(None), Ok("Hello, world!".into()));
        assert_eq!(remote.greet(Some("Ada".into())), Ok("Hello, Ada!".into()));
        assert_eq!(remote.divide(1.0, 4.0), Ok(0.25));
        assert_eq!(
            remote.divide(1.0, 0.0),
            Err(Error::Runtime("division by zero".into()))
        );
        assert_eq!(remote.answer(), Ok(42));
        assert_eq!(
            remote.midpoint(Point { x: 0.0, y: 0.0 }, Point { x: 1.0, y: 1.0 }),
            Ok(Point { x: 0.5, y: 0.5 })
        );
        assert_eq!(
            remote.missing(1),
            Err(Error::Name(
                "no function named 'missing' is registered".into()
            ))
        );
        assert_eq!(remote.client().ping(), Ok(NAME.to_owned()));
        // The seed's own stubs, as examples/client.rs uses them.
        let calc = common::seed::Calculator::new(client(server.port()));
        assert_eq!(calc.add(5, 7), Ok(12));
        assert_eq!(calc.mul(3, 4), Ok(12));
    });
}
