//! Transfer progress for whoever shows it (a progress bar, a log line): bytes of file content
//! as they cross the wire, files as they land. Install an observer on a clone of the client
//! with [`Client::with_observer`](crate::Client::with_observer). A retried transfer counts its
//! bytes again, and chunks the server already holds count as sent.

/// Receives progress from transfers made by a [`Client`](crate::Client).
pub trait TransferObserver: Send + Sync {
    /// `n` more bytes of file content were sent, received, or found on the server already.
    fn bytes(&self, n: u64);
    /// One file finished transferring (uploaded or downloaded, and verified).
    fn file_done(&self, path: &str);
}

/// The observer slot of a client; empty unless one was installed.
#[derive(Clone, Default)]
pub(crate) struct Observer(Option<std::sync::Arc<dyn TransferObserver>>);

impl Observer {
    pub(crate) fn new(o: std::sync::Arc<dyn TransferObserver>) -> Self {
        Observer(Some(o))
    }

    pub(crate) fn bytes(&self, n: u64) {
        if let Some(o) = &self.0 {
            o.bytes(n);
        }
    }

    pub(crate) fn file_done(&self, path: &str) {
        if let Some(o) = &self.0 {
            o.file_done(path);
        }
    }
}
