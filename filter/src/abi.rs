//! The Proxy-Wasm host calls the filter makes, straight on the ABI (wasm32
//! only). Each returns the host's status as an error instead of panicking:
//! the SDK's `hostcalls` wrappers panic on any status they do not expect,
//! and a panic kills the VM and every request on its worker.
//!
//! One call still goes through the SDK: `proxy_http_call`, because the SDK's
//! dispatcher must learn each callout's token to route its answer back to
//! the root context that made it (`hostcalls::dispatch_http_call` registers
//! it; the dispatcher is not public).

use crate::request_headers::encode_pairs;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status, StreamType};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    /// A one-part property path is the name itself (parts are joined by NUL).
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

pub const OK: u32 = Status::Ok as u32;
pub const NOT_FOUND: u32 = Status::NotFound as u32;
pub const CAS_MISMATCH: u32 = Status::CasMismatch as u32;
const REQUEST_HEADERS: u32 = MapType::HttpRequestHeaders as u32;
const HTTP_REQUEST_STREAM: u32 = StreamType::HttpRequest as u32;

/// A host status other than `Ok`.
pub type HostStatus = u32;

fn status(code: u32) -> Result<(), HostStatus> {
    if code == OK { Ok(()) } else { Err(code) }
}

/// Takes a buffer the host returned. `None` for no buffer.
///
/// # Safety
/// `data` is null or was obtained by the host from this module's
/// `proxy_on_memory_allocate` (the SDK's allocator, which hands out a
/// forgotten `Vec<u8>` whose capacity is its size) and written in full.
unsafe fn take_buffer(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: as the caller promises; the buffer is ours from here on, as
    // in the SDK's own wrappers.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub fn log(level: LogLevel, message: &str) -> Result<(), HostStatus> {
    // SAFETY: the host reads `len` bytes at the pointer during the call.
    status(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

/// The host's log level, as the SDK's `LogLevel` number (0 trace … 5 critical).
pub fn log_level() -> Result<u32, HostStatus> {
    let mut level: u32 = 0;
    // SAFETY: the host writes one u32 through the pointer.
    status(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(level)
}

pub fn set_tick_period_ms(ms: u32) -> Result<(), HostStatus> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

pub fn now_nanos() -> Result<u64, HostStatus> {
    let mut nanos: u64 = 0;
    // SAFETY: the host writes one u64 through the pointer.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

/// Up to `max` bytes of a host buffer (plugin configuration, a callout's
/// body); `None` when it has none.
pub fn buffer(kind: BufferType, max: usize) -> Result<Option<Vec<u8>>, HostStatus> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer's address and size (see take_buffer).
    let code = unsafe { proxy_get_buffer_bytes(kind as u32, 0, max, &mut data, &mut size) };
    if code == NOT_FOUND {
        return Ok(None);
    }
    status(code)?;
    // SAFETY: written by the host as above.
    Ok(unsafe { take_buffer(data, size) })
}

/// The request headers in the host's serialization, as one buffer (empty
/// when the host hands over no buffer for an empty map).
pub fn request_header_pairs() -> Result<Vec<u8>, HostStatus> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer's address and size (see take_buffer).
    status(unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) })?;
    // SAFETY: written by the host as above.
    Ok(unsafe { take_buffer(data, size) }.unwrap_or_default())
}

/// One value of a header map (`None`: not there; an empty value may come
/// back as no buffer, which reads as empty).
pub fn header_value(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostStatus> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host reads the name during the call and writes a buffer's
    // address and size (see take_buffer).
    let code = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    if code == NOT_FOUND {
        return Ok(None);
    }
    status(code)?;
    // SAFETY: written by the host as above.
    Ok(Some(unsafe { take_buffer(data, size) }.unwrap_or_default()))
}

pub fn add_request_header(name: &str, value: &str) -> Result<(), HostStatus> {
    // SAFETY: the host reads `len` bytes at each pointer during the call.
    status(unsafe {
        proxy_add_header_map_value(
            REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_request_header(name: &str) -> Result<(), HostStatus> {
    // SAFETY: the host reads `len` bytes at the pointer during the call.
    status(unsafe { proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len()) })
}

/// Sets a one-part property (filter state `wasm.<name>` in Envoy).
pub fn set_property(name: &str, value: &str) -> Result<(), HostStatus> {
    // SAFETY: the host reads `len` bytes at each pointer during the call.
    status(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its CAS; `(None, None)` when the key is unset.
pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostStatus> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: the host reads the key during the call and writes a buffer's
    // address and size (see take_buffer) and a u32.
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    if code == NOT_FOUND {
        return Ok((None, None));
    }
    status(code)?;
    // SAFETY: written by the host as above.
    let value = unsafe { take_buffer(data, size) };
    Ok((value, (cas != 0).then_some(cas)))
}

/// Writes a shared-data value if its CAS is still `cas` (0: unconditionally).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostStatus> {
    // SAFETY: the host reads `len` bytes at each pointer during the call.
    status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Answers the current request locally.
pub fn send_local_response(
    status_code: u32,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(), HostStatus> {
    let headers = encode_pairs(headers).ok_or(Status::BadArgument as u32)?;
    // SAFETY: the host reads `len` bytes at each pointer during the call; no
    // details string (null, 0); -1: not a gRPC answer.
    status(unsafe {
        proxy_send_local_response(
            status_code,
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Resets the downstream request.
pub fn reset_request() -> Result<(), HostStatus> {
    // SAFETY: no pointers.
    status(unsafe { proxy_close_stream(HTTP_REQUEST_STREAM) })
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, HostStatus> {
    let mut id: u32 = 0;
    // SAFETY: the host reads the name during the call and writes one u32.
    status(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), HostStatus> {
    // SAFETY: no pointers.
    status(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), HostStatus> {
    // SAFETY: no pointers.
    status(unsafe { proxy_record_metric(id, value) })
}
