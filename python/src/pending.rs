//! `RPCClient.submit` and `Pending`: Rust's pipelined calls, from Python.
//!
//! Rust's `Pending<'c>` borrows its `RpcClient`, which is not `Sync`, so it cannot live
//! in a Python object. Here one thread owns a second `RpcClient` (built from the same
//! settings, its own connection) and every `Pending` it hands out; Python holds only a
//! key. Submitting and waiting are messages to that thread, answered on a channel. The
//! client's ordinary calls keep their own connection and do not pay for this hand-off.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde_json::{Map, Value};
use zmq_rpc::{Error, Pending, RpcClient};

enum Command {
    Submit {
        function: String,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        reply: mpsc::Sender<Result<(u64, String), Error>>,
    },
    Wait {
        key: u64,
        reply: mpsc::Sender<Result<Value, Error>>,
    },
    Abandon {
        key: u64,
    },
}

/// The thread that owns the submitting client and its calls in flight.
pub(crate) struct Pipeline {
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

fn gone() -> Error {
    Error::Runtime("the client's submit thread has stopped".into())
}

impl Pipeline {
    pub(crate) fn start(client: RpcClient) -> Result<Pipeline, Error> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("zmq-rpc-submit".into())
            .spawn(move || serve(&client, &rx))
            .map_err(|e| Error::Runtime(format!("cannot start the submit thread: {e}")))?;
        Ok(Pipeline {
            commands: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.commands
            .as_ref()
            .ok_or_else(gone)?
            .send(command)
            .map_err(|_| gone())
    }

    /// Sends the request; returns its key here and its id on the wire.
    pub(crate) fn submit(
        &self,
        function: String,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<(u64, String), Error> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Submit {
            function,
            args,
            kwargs,
            reply,
        })?;
        answer.recv().map_err(|_| gone())?
    }

    /// Waits for the result of the call `key` (once per key).
    pub(crate) fn wait(&self, key: u64) -> Result<Value, Error> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Wait { key, reply })?;
        answer.recv().map_err(|_| gone())?
    }

    /// Forgets the call `key`: its reply is discarded when it comes.
    pub(crate) fn abandon(&self, key: u64) {
        // A stopped thread has forgotten every call already.
        let _ = self.send(Command::Abandon { key });
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the channel ends the thread; it is idle (a wait in progress would
        // hold a `Pending`, which keeps the client and so this pipeline alive).
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(client: &RpcClient, commands: &mpsc::Receiver<Command>) {
    let mut in_flight: HashMap<u64, Pending<'_>> = HashMap::new();
    let mut next_key = 0u64;
    for command in commands {
        match command {
            Command::Submit {
                function,
                args,
                kwargs,
                reply,
            } => {
                let outcome = client.submit_with(&function, args, kwargs).map(|pending| {
                    next_key += 1;
                    let id = pending.id().to_owned();
                    in_flight.insert(next_key, pending);
                    (next_key, id)
                });
                let _ = reply.send(outcome);
            }
            Command::Wait { key, reply } => {
                let outcome = match in_flight.remove(&key) {
                    Some(pending) => pending.wait(),
                    None => Err(Error::Runtime(
                        "this call's result was already taken".into(),
                    )),
                };
                let _ = reply.send(outcome);
            }
            Command::Abandon { key } => {
                in_flight.remove(&key);
            }
        }
    }
}
