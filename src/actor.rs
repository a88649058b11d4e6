//! An actor: a thread that owns its sockets, and the control pipe through which its
//! handle stops it. Dropping the handle stops and joins the thread: nothing is detached.

use std::thread::JoinHandle;

use crate::error::Error;
use crate::transport;

pub(crate) struct Actor {
    name: &'static str,
    control: Option<zmq::Socket>,
    thread: Option<JoinHandle<()>>,
}

impl Actor {
    /// Runs `body` on a thread called `name`. `body` gets the thread's end of the
    /// control pipe: a message on it means "stop".
    pub(crate) fn spawn<F>(ctx: &zmq::Context, name: &'static str, body: F) -> Result<Actor, Error>
    where
        F: FnOnce(zmq::Socket) + Send + 'static,
    {
        let (control, peer) = transport::pipe(ctx)?;
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(peer))
            .map_err(|e| Error::Transport(format!("cannot start the {name} thread: {e}")))?;
        Ok(Actor {
            name,
            control: Some(control),
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, JoinHandle::is_finished)
    }

    /// Asks the thread to stop and waits for it.
    pub(crate) fn stop(&mut self) {
        self.signal();
        let _ = self.wait();
    }

    /// Asks the thread to stop without waiting for it.
    pub(crate) fn signal(&mut self) {
        if let Some(control) = self.control.take() {
            // Never blocks: a thread that has already ended has no peer to take it.
            let _ = control.send("STOP", zmq::DONTWAIT);
        }
    }

    /// Gives up on a thread that does not end (a call that overruns the shutdown grace):
    /// it is left behind rather than joined.
    pub(crate) fn abandon(&mut self) {
        self.control = None;
        self.thread = None;
    }

    /// Waits for the thread to end by itself.
    pub(crate) fn wait(&mut self) -> Result<(), Error> {
        // Close our end of the pipe first: a thread that ends by itself drops the last
        // context handle it holds, and terminating a context waits for every socket of
        // it to close, this one included. Holding it while joining would deadlock.
        self.control.take();
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::Runtime(format!("the {} thread panicked", self.name))),
            None => Ok(()),
        }
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        self.stop();
    }
}
