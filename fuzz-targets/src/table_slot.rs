//! Target `table_slot`: decoding one compact key-table slot from shared
//! data (any bytes: another filter build, a torn write, garbage).
//!
//! What must hold: no panic and no allocation sized by the input's counts;
//! whatever decodes encodes back to a slot that decodes the same (the
//! encoder writes only what the decoder accepts); a decoded entry names only
//! valid servers; and the encoding is never longer than what was read.

use keygate_filter::slot;
use keygate_protocol::ServerScope;
use keygate_protocol::server_name::is_valid_server_name;

pub fn check(data: &[u8]) {
    let Some(stored) = slot::decode(data) else {
        return;
    };
    if let Some(entry) = &stored.entry
        && let ServerScope::Named(names) = &entry.servers
    {
        for name in names {
            assert!(is_valid_server_name(name.as_bytes()), "decoded {name:?}");
        }
    }
    let again = slot::encode(&stored);
    assert!(again.len() <= data.len(), "re-encoding grew the slot");
    assert_eq!(
        slot::decode(&again),
        Some(stored),
        "a slot decodes differently once re-encoded"
    );
}
