//! Free TCP ports on 127.0.0.1 for the processes of one test.
//!
//! Tests run in parallel threads, so a port is asked from the kernel (bind to
//! port 0) and also remembered for the life of the process: the same test
//! binary never hands one port out twice, even after the probe socket closed.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port nothing listens on right now and that no other test of this
/// process was given.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("could not find a free port on 127.0.0.1 after 100 tries");
}
