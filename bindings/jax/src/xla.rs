//! The part of XLA's FFI C API (`xla/ffi/api/c_api.h`) this handler uses, declared by hand.
//!
//! Every struct XLA passes starts with its `struct_size` (`offsetof(last) + sizeof(last)`);
//! the handler checks it before reading a field, so a caller built against an older, smaller
//! layout is refused, never read past its end. The layouts below are those of API version 0.1,
//! which later versions (0.5 in jaxlib 0.12) only extend at the end; this is the version the
//! handler declares in the metadata handshake ([`API_VERSION`]).
//!
//! Struct fields carry the names (and meaning) they have in `c_api.h`.
#![allow(missing_docs)]

use core::ffi::{c_char, c_void};
use core::mem::{offset_of, size_of};

/// The FFI API version this handler is written against, declared at registration.
pub const API_VERSION: (i32, i32) = (0, 1);

/// `XLA_FFI_Extension_Metadata`: the extension XLA passes when it asks for the metadata.
pub const EXTENSION_METADATA: i32 = 1;

/// `XLA_FFI_ExecutionStage_EXECUTE`.
pub const STAGE_EXECUTE: i32 = 3;

/// `XLA_FFI_ArgType_BUFFER` / `XLA_FFI_RetType_BUFFER`.
pub const BUFFER: i32 = 1;

/// `XLA_FFI_AttrType_*`.
pub const ATTR_SCALAR: i32 = 3;
/// `XLA_FFI_AttrType_STRING`.
pub const ATTR_STRING: i32 = 4;

/// `XLA_FFI_Error_Code_INVALID_ARGUMENT`.
pub const ERROR_INVALID_ARGUMENT: i32 = 3;
/// `XLA_FFI_Error_Code_FAILED_PRECONDITION`.
pub const ERROR_FAILED_PRECONDITION: i32 = 9;
/// `XLA_FFI_Error_Code_INTERNAL`.
pub const ERROR_INTERNAL: i32 = 13;

/// `XLA_FFI_DataType` values the handler accepts.
pub mod dtype {
    pub const PRED: i32 = 1;
    pub const S32: i32 = 4;
    pub const S64: i32 = 5;
    pub const U32: i32 = 8;
    pub const U64: i32 = 9;
    pub const F16: i32 = 10;
    pub const F32: i32 = 11;
    pub const F64: i32 = 12;
    pub const BF16: i32 = 16;
}

/// `XLA_FFI_Extension_Base` (`XLA_FFI_InternalExtension` in newer headers).
#[repr(C)]
pub struct ExtensionBase {
    pub struct_size: usize,
    pub kind: i32,
    pub next: *mut ExtensionBase,
}

/// `XLA_FFI_Api_Version`.
#[repr(C)]
pub struct ApiVersion {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub major_version: i32,
    pub minor_version: i32,
}

/// `XLA_FFI_Metadata`.
#[repr(C)]
pub struct Metadata {
    pub struct_size: usize,
    pub api_version: ApiVersion,
    pub traits: u32,
}

/// `XLA_FFI_Metadata_Extension`.
#[repr(C)]
pub struct MetadataExtension {
    pub extension_base: ExtensionBase,
    pub metadata: *mut Metadata,
}

/// `XLA_FFI_Error_Create_Args`.
#[repr(C)]
pub struct ErrorCreateArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub message: *const c_char,
    pub errc: i32,
}

/// Opaque `XLA_FFI_Error`.
#[repr(C)]
pub struct Error {
    _private: [u8; 0],
}

/// `XLA_FFI_Error_Create`.
pub type ErrorCreate = unsafe extern "C" fn(args: *mut ErrorCreateArgs) -> *mut Error;

/// `XLA_FFI_Error_Destroy_Args`.
#[repr(C)]
pub struct ErrorDestroyArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub error: *mut Error,
}

/// `XLA_FFI_Error_Destroy`.
pub type ErrorDestroy = unsafe extern "C" fn(args: *mut ErrorDestroyArgs);

/// `XLA_FFI_Task`: a task for XLA's thread pool.
pub type Task = unsafe extern "C" fn(data: *mut c_void);

/// `XLA_FFI_ThreadPool_Schedule_Args`.
#[repr(C)]
pub struct ThreadPoolScheduleArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub ctx: *mut c_void,
    pub task: Option<Task>,
    pub data: *mut c_void,
}

/// `XLA_FFI_ThreadPool_Schedule`: runs `task(data)` on XLA's intra-op thread pool (on the
/// CPU: the pool that runs XLA's own parallel loops), or returns an error without a pool.
pub type ThreadPoolSchedule = unsafe extern "C" fn(args: *mut ThreadPoolScheduleArgs) -> *mut Error;

/// `XLA_FFI_Stream_Get_Args`.
#[repr(C)]
pub struct StreamGetArgs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub ctx: *mut c_void,
    /// Out: the platform's stream (`CUstream` on platform "CUDA").
    pub stream: *mut c_void,
}

/// `XLA_FFI_Stream_Get`: the stream the call runs on (an error on a platform without one).
pub type StreamGet = unsafe extern "C" fn(args: *mut StreamGetArgs) -> *mut Error;

/// A function of the table the handler does not call.
pub type Unused = *const c_void;

/// The head of `XLA_FFI_Api`, through `XLA_FFI_ThreadPool_Schedule` (the twelfth function,
/// at the same place in every version since 0.1): the handlers call `Error_Create`,
/// `Error_Destroy`, `Stream_Get` (the GPU's) and `ThreadPool_Schedule` (the CPU's).
#[repr(C)]
pub struct Api {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub api_version: ApiVersion,
    pub internal_api: *const c_void,
    pub error_create: Option<ErrorCreate>,
    pub error_get_message: Unused,
    pub error_destroy: Option<ErrorDestroy>,
    pub handler_register: Unused,
    pub stream_get: Option<StreamGet>,
    pub type_id_register: Unused,
    pub execution_context_get: Unused,
    pub state_set: Unused,
    pub state_get: Unused,
    pub device_memory_allocate: Unused,
    pub device_memory_free: Unused,
    pub thread_pool_schedule: Option<ThreadPoolSchedule>,
}

/// `XLA_FFI_Buffer`.
#[repr(C)]
pub struct Buffer {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub dtype: i32,
    pub data: *mut c_void,
    pub rank: i64,
    pub dims: *const i64,
}

/// `XLA_FFI_Args` (and, with the same layout, `XLA_FFI_Rets`).
#[repr(C)]
pub struct Args {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub size: i64,
    pub types: *const i32,
    pub args: *const *mut c_void,
}

/// `XLA_FFI_ByteSpan`.
#[repr(C)]
pub struct ByteSpan {
    pub ptr: *const c_char,
    pub len: usize,
}

/// `XLA_FFI_Scalar`.
#[repr(C)]
pub struct Scalar {
    pub dtype: i32,
    pub value: *const c_void,
}

/// `XLA_FFI_Attrs`.
#[repr(C)]
pub struct Attrs {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub size: i64,
    pub types: *const i32,
    pub names: *const *const ByteSpan,
    pub attrs: *const *const c_void,
}

/// `XLA_FFI_CallFrame` up to `attrs` (the `future` field after it is newer than 0.1 and
/// not used).
#[repr(C)]
pub struct CallFrame {
    pub struct_size: usize,
    pub extension_start: *mut ExtensionBase,
    pub api: *const Api,
    pub ctx: *mut c_void,
    pub stage: i32,
    pub args: Args,
    pub rets: Args,
    pub attrs: Attrs,
}

macro_rules! struct_size {
    ($t:ty, $last:ident, $last_ty:ty) => {
        offset_of!($t, $last) + size_of::<$last_ty>()
    };
}

/// `XLA_FFI_CallFrame_STRUCT_SIZE` (168 on 64-bit targets).
pub const CALL_FRAME_SIZE: usize = struct_size!(CallFrame, attrs, Attrs);
/// `XLA_FFI_Buffer_STRUCT_SIZE`.
pub const BUFFER_SIZE: usize = struct_size!(Buffer, dims, *const i64);
/// `XLA_FFI_Args_STRUCT_SIZE`.
pub const ARGS_SIZE: usize = struct_size!(Args, args, *const *mut c_void);
/// `XLA_FFI_Attrs_STRUCT_SIZE`.
pub const ATTRS_SIZE: usize = struct_size!(Attrs, attrs, *const *const c_void);
/// `XLA_FFI_Metadata_STRUCT_SIZE` (36).
pub const METADATA_SIZE: usize = struct_size!(Metadata, traits, u32);
/// `XLA_FFI_Metadata_Extension_STRUCT_SIZE`.
pub const METADATA_EXTENSION_SIZE: usize = struct_size!(MetadataExtension, metadata, *mut Metadata);
/// `XLA_FFI_Api_Version_STRUCT_SIZE` (24).
pub const API_VERSION_SIZE: usize = struct_size!(ApiVersion, minor_version, i32);
/// `XLA_FFI_Error_Create_Args_STRUCT_SIZE` (28).
pub const ERROR_CREATE_ARGS_SIZE: usize = struct_size!(ErrorCreateArgs, errc, i32);
/// Bytes of `XLA_FFI_Api` the handler needs to report an error (through
/// `XLA_FFI_Error_Create`).
pub const API_HEAD_SIZE: usize = struct_size!(Api, error_create, Option<ErrorCreate>);
/// Bytes of `XLA_FFI_Api` through `XLA_FFI_ThreadPool_Schedule`.
pub const API_POOL_SIZE: usize =
    struct_size!(Api, thread_pool_schedule, Option<ThreadPoolSchedule>);
/// Bytes of `XLA_FFI_Api` through `XLA_FFI_Stream_Get`.
pub const API_STREAM_SIZE: usize = struct_size!(Api, stream_get, Option<StreamGet>);
/// `XLA_FFI_Stream_Get_Args_STRUCT_SIZE` (32).
pub const STREAM_GET_ARGS_SIZE: usize = struct_size!(StreamGetArgs, stream, *mut c_void);
/// `XLA_FFI_Error_Destroy_Args_STRUCT_SIZE` (24).
pub const ERROR_DESTROY_ARGS_SIZE: usize = struct_size!(ErrorDestroyArgs, error, *mut Error);
/// `XLA_FFI_ThreadPool_Schedule_Args_STRUCT_SIZE` (40).
pub const THREAD_POOL_SCHEDULE_ARGS_SIZE: usize =
    struct_size!(ThreadPoolScheduleArgs, data, *mut c_void);

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;

    /// The sizes `c_api.h` computes on x86-64 and AArch64.
    #[test]
    fn struct_sizes_match_the_header() {
        assert_eq!(CALL_FRAME_SIZE, 168);
        assert_eq!(METADATA_SIZE, 36);
        assert_eq!(API_VERSION_SIZE, 24);
        assert_eq!(ERROR_CREATE_ARGS_SIZE, 28);
        assert_eq!(BUFFER_SIZE, 48);
        assert_eq!(ARGS_SIZE, 40);
        assert_eq!(ATTRS_SIZE, 48);
        assert_eq!(METADATA_EXTENSION_SIZE, 32);
        assert_eq!(API_HEAD_SIZE, 56);
        assert_eq!(API_POOL_SIZE, 144);
        assert_eq!(ERROR_DESTROY_ARGS_SIZE, 24);
        assert_eq!(THREAD_POOL_SCHEDULE_ARGS_SIZE, 40);
        assert_eq!(API_STREAM_SIZE, 88);
        assert_eq!(STREAM_GET_ARGS_SIZE, 32);
    }
}
