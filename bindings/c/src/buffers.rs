//! Turning C pointers into Rust references, checked: NULL, alignment, size and overlap are
//! reported as result codes before any reference exists, so no argument can cause undefined
//! behaviour on this side of the boundary (what the caller promises is only that a non-NULL
//! pointer points at as many live elements as it says).

use core::ffi::{c_char, CStr};
use core::mem::{align_of, size_of};

use crate::error::{
    Failure, VSGD_RESULT_BUFFER_TOO_LARGE, VSGD_RESULT_BUFFER_TOO_SMALL,
    VSGD_RESULT_INVALID_STRING, VSGD_RESULT_MISALIGNED_BUFFER, VSGD_RESULT_NULL_PARAMETER,
    VSGD_RESULT_OVERLAPPING_BUFFERS,
};

fn aligned<T>(ptr: *const T, what: &str) -> Result<(), Failure> {
    if (ptr as usize) % align_of::<T>() == 0 {
        Ok(())
    } else {
        Err(Failure::new(
            VSGD_RESULT_MISALIGNED_BUFFER,
            format!("{what} is not aligned to {} bytes", align_of::<T>()),
        ))
    }
}

/// A reference to one input value (a struct passed by pointer).
///
/// # Safety
/// `ptr` must be NULL or point at a live, initialized `T` for `'a`.
pub(crate) unsafe fn input<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    aligned(ptr, what)?;
    // SAFETY: non-NULL and aligned (checked); live and initialized (caller).
    Ok(unsafe { &*ptr })
}

/// Checks an output pointer; the value is written later with [`write`] so that no reference
/// to it is alive while other buffers of the call are borrowed.
pub(crate) fn check_out<T>(ptr: *mut T, what: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    aligned(ptr, what)
}

/// Writes an output checked by [`check_out`].
///
/// # Safety
/// `ptr` passed [`check_out`] and is valid for one write of `T`.
pub(crate) unsafe fn write<T>(ptr: *mut T, value: T) {
    // SAFETY: non-NULL and aligned (check_out); valid for writes (caller). `T` is a plain
    // C value, so nothing is dropped in place.
    unsafe { ptr.write(value) }
}

/// Checks an optional output (NULL means "not wanted"). It stays a raw pointer, written
/// last with [`write`], so that no reference to it is alive while another output of the call
/// (which the caller may have made overlap it) is written.
pub(crate) fn check_optional_out<T>(ptr: *mut T, what: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        Ok(())
    } else {
        aligned(ptr, what)
    }
}

/// Checks a growable output struct (one whose first field is `size_t struct_size`, set by the
/// caller to `sizeof` the struct it was compiled with): non-NULL, aligned, and at least
/// `min` bytes (the size of the struct's first version). Returns the caller's size.
///
/// # Safety
/// `ptr` must be NULL or valid for reading one `usize` (the caller initialized `struct_size`).
pub(crate) unsafe fn check_sized<T>(ptr: *mut T, min: usize, what: &str) -> Result<usize, Failure> {
    check_out(ptr, what)?;
    // SAFETY: non-NULL and aligned for T, whose first field is a usize (repr(C)); readable
    // (caller).
    let size = unsafe { ptr.cast::<usize>().read() };
    if size < min {
        return Err(Failure::new(
            crate::error::VSGD_RESULT_INVALID_STRUCT_SIZE,
            format!(
                "{what}->struct_size = {size}, at least {min} expected (set it to sizeof the struct)"
            ),
        ));
    }
    Ok(size)
}

/// Writes `value` into a growable output struct checked by [`check_sized`]: the first
/// min(`size`, `sizeof(T)`) bytes, with `struct_size` set to that count, so a caller built
/// with a larger (newer) struct learns which fields this library filled, and one built with
/// an older, smaller struct gets no byte past its end.
///
/// # Safety
/// `ptr` passed [`check_sized`], which returned `size`, and is valid for `size` byte writes.
pub(crate) unsafe fn write_sized<T: Copy>(ptr: *mut T, mut value: T, size: usize) {
    let n = size.min(size_of::<T>());
    // SAFETY: T's first field is the usize struct_size (repr(C)); `value` is a local.
    unsafe { (&mut value as *mut T).cast::<usize>().write(n) };
    // SAFETY: `ptr` is valid for `size` ≥ n byte writes (caller); `value` is a local, so
    // disjoint. An untyped byte copy (padding included).
    unsafe {
        core::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), ptr.cast::<u8>(), n)
    };
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` must be NULL or point at a NUL-terminated string alive for `'a`.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated (caller); `c_char` has alignment 1.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|_| {
        Failure::new(
            VSGD_RESULT_INVALID_STRING,
            format!("{what} is not valid UTF-8"),
        )
    })
}

/// Copies `s` into the caller's text buffer: at most `len - 1` bytes, cut at a character
/// boundary, then a NUL; the full length goes to `out_len`. A cut is `BUFFER_TOO_SMALL`.
///
/// Both outputs are written through raw pointers: `buf` may be uninitialized memory, and
/// `out_len` may even lie inside `buf` (then the length wins), without any reference to
/// either existing.
///
/// # Safety
/// `buf` must be NULL or valid for `len` byte writes; `out_len` must be NULL or have passed
/// [`check_optional_out`] and be valid for one write.
pub(crate) unsafe fn copy_str(
    s: &str,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Result<(), Failure> {
    if buf.is_null() && len > 0 {
        return Err(Failure::null("buf"));
    }
    let mut n = 0;
    if len > 0 {
        n = s.len().min(len - 1);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: `buf` is valid for `len` > n bytes (caller); `s` is a Rust string, which
        // cannot overlap a caller's buffer that we are allowed to write.
        unsafe {
            core::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
    }
    // Written last: the reported length is the whole text, cut or not.
    if !out_len.is_null() {
        // SAFETY: non-NULL, aligned (check_optional_out) and valid for one write (caller);
        // no reference to `buf` exists, so overlapping it is harmless.
        unsafe { write(out_len, s.len()) };
    }
    if n < s.len() {
        Err(too_small(s.len()))
    } else {
        Ok(())
    }
}

fn too_small(need: usize) -> Failure {
    Failure::new(
        VSGD_RESULT_BUFFER_TOO_SMALL,
        format!(
            "buffer too small: the text needs {} bytes with its NUL",
            need + 1
        ),
    )
}

/// The address range of one buffer argument, for the overlap check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    start: usize,
    end: usize,
    written: bool,
    what: &'static str,
    index: Option<usize>,
}

impl Span {
    /// An empty buffer (overlaps nothing), to fill fixed-size span arrays.
    pub(crate) const EMPTY: Span = Span {
        start: 0,
        end: 0,
        written: false,
        what: "",
        index: None,
    };

    fn name(&self) -> String {
        match self.index {
            Some(i) => format!("{}[{i}]", self.what),
            None => self.what.to_string(),
        }
    }
}

/// Checks one buffer argument of `len` elements: non-NULL unless `len` is 0, aligned, and
/// small enough for a Rust slice (at most `isize::MAX` bytes). Returns its range.
pub(crate) fn check_buffer<T>(
    ptr: *const T,
    len: usize,
    written: bool,
    what: &'static str,
    index: Option<usize>,
) -> Result<Span, Failure> {
    let name = || match index {
        Some(i) => format!("{what}[{i}]"),
        None => what.to_string(),
    };
    let bytes = len
        .checked_mul(size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| {
            Failure::new(
                VSGD_RESULT_BUFFER_TOO_LARGE,
                format!("{}: {len} elements do not fit in memory", name()),
            )
        })?;
    if len > 0 {
        if ptr.is_null() {
            return Err(Failure::new(
                VSGD_RESULT_NULL_PARAMETER,
                format!("{} is NULL with length {len}", name()),
            ));
        }
        aligned(ptr, &name())?;
        if (ptr as usize).checked_add(bytes).is_none() {
            return Err(Failure::new(
                VSGD_RESULT_BUFFER_TOO_LARGE,
                format!("{} runs past the end of the address space", name()),
            ));
        }
    }
    Ok(Span {
        start: ptr as usize,
        end: ptr as usize + if len > 0 { bytes } else { 0 },
        written,
        what,
        index,
    })
}

/// An empty vector with room for `n` items, or `ALLOCATION_FAILED` (never an abort): for
/// lists whose length the caller chooses (tensor counts of a step, ...).
pub(crate) fn try_vec<T>(n: usize, what: &str) -> Result<Vec<T>, Failure> {
    let mut v = Vec::new();
    let bytes = n.saturating_mul(size_of::<T>());
    if bytes > isize::MAX as usize || v.try_reserve_exact(n).is_err() {
        return Err(Failure::new(
            crate::error::VSGD_RESULT_ALLOCATION_FAILED,
            format!("{what}: could not allocate {bytes} bytes"),
        ));
    }
    Ok(v)
}

/// A copy of `items` in a fallibly allocated vector (see [`try_vec`]).
pub(crate) fn try_to_vec<T: Copy>(items: &[T], what: &str) -> Result<Vec<T>, Failure> {
    let mut v = try_vec(items.len(), what)?;
    v.extend_from_slice(items);
    Ok(v)
}

/// Fails when a written buffer overlaps any other buffer (Rust forbids a `&mut` slice to
/// alias anything). Empty buffers overlap nothing. Sorts `spans`; O(n log n).
pub(crate) fn check_disjoint(spans: &mut [Span]) -> Result<(), Failure> {
    spans.sort_unstable_by_key(|s| s.start);
    // Furthest end so far of any buffer and of a written one, with the span that reached it.
    let mut any: Option<Span> = None;
    let mut written: Option<Span> = None;
    for s in spans.iter().filter(|s| s.end > s.start) {
        let hit = if s.written {
            any.filter(|a| a.end > s.start)
        } else {
            written.filter(|w| w.end > s.start)
        };
        if let Some(other) = hit {
            return Err(Failure::new(
                VSGD_RESULT_OVERLAPPING_BUFFERS,
                format!("{} overlaps {}", other.name(), s.name()),
            ));
        }
        if any.map_or(true, |a| s.end > a.end) {
            any = Some(*s);
        }
        if s.written && written.map_or(true, |w| s.end > w.end) {
            written = Some(*s);
        }
    }
    Ok(())
}

/// A slice over a buffer that passed [`check_buffer`] (and, if any buffer of the call is
/// written, [`check_disjoint`]).
///
/// # Safety
/// When `len > 0`, `ptr` must point at `len` initialized elements alive for `'a`, not written
/// by anyone else meanwhile.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: non-NULL, aligned, size ≤ isize::MAX (check_buffer); live and initialized
        // (caller).
        unsafe { core::slice::from_raw_parts(ptr, len) }
    }
}

/// Copies `src` into a write-only output buffer that passed [`check_buffer`] (at least
/// `src.len()` elements). Through raw pointers, never a `&mut [T]`: the caller's buffer may be
/// uninitialized (fresh `malloc` memory), and a reference to it would claim otherwise.
///
/// # Safety
/// When `src` is not empty, `dst` must be valid for `src.len()` writes of `T`, and must not
/// overlap `src` (true whenever `src` is Rust-owned).
pub(crate) unsafe fn write_slice<T: Copy>(dst: *mut T, src: &[T]) {
    if !src.is_empty() {
        // SAFETY: non-NULL, aligned, size ≤ isize::MAX (check_buffer); valid for
        // `src.len()` writes and disjoint from `src` (caller). `T: Copy` drops nothing.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
    }
}

/// A write-only view of an output buffer that passed [`check_buffer`], which may hold
/// uninitialized memory (hence `MaybeUninit`: nothing is read through it).
///
/// # Safety
/// When `len > 0`, `ptr` must be valid for `len` writes for `'a`, and no other reference to
/// that memory may exist for `'a`.
pub(crate) unsafe fn slice_uninit<'a, T>(
    ptr: *mut T,
    len: usize,
) -> &'a mut [core::mem::MaybeUninit<T>] {
    if len == 0 {
        &mut []
    } else {
        // SAFETY: non-NULL, aligned, size ≤ isize::MAX (check_buffer); writable and exclusive
        // (caller); MaybeUninit<T> has T's layout and needs no initialized contents.
        unsafe { core::slice::from_raw_parts_mut(ptr.cast(), len) }
    }
}

/// A mutable slice over an in-out buffer that passed [`check_buffer`] and
/// [`check_disjoint`] (parameters, state arrays: read, then written). Write-only outputs,
/// which may be uninitialized, go through [`write_slice`] or [`write`] instead.
///
/// # Safety
/// As [`slice`] (in particular the elements are initialized), and no other reference to the
/// elements may exist for `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> &'a mut [T] {
    if len == 0 {
        &mut []
    } else {
        // SAFETY: as in `slice`; exclusive because check_disjoint found no overlap with any
        // other buffer of the call (caller guarantees nobody else uses it meanwhile).
        unsafe { core::slice::from_raw_parts_mut(ptr, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: usize, end: usize, written: bool) -> Span {
        Span {
            start,
            end,
            written,
            what: "b",
            index: None,
        }
    }

    #[test]
    fn overlap_rules() {
        let ok = |v: &mut [Span]| check_disjoint(v).is_ok();
        // Two read-only buffers may overlap; a written one may not overlap anything.
        assert!(ok(&mut [span(0, 8, false), span(4, 12, false)]));
        assert!(!ok(&mut [span(0, 8, true), span(4, 12, false)]));
        assert!(!ok(&mut [span(0, 8, false), span(4, 12, true)]));
        assert!(!ok(&mut [
            span(0, 100, true),
            span(10, 12, false),
            span(50, 60, false)
        ]));
        assert!(!ok(&mut [
            span(0, 100, false),
            span(10, 12, false),
            span(50, 60, true)
        ]));
        // Adjacent is fine, empty is fine, identical is not.
        assert!(ok(&mut [span(8, 16, true), span(0, 8, true)]));
        assert!(ok(&mut [span(4, 4, true), span(0, 8, true)]));
        assert!(!ok(&mut [span(0, 8, true), span(0, 8, true)]));
    }

    #[test]
    fn buffer_checks() {
        let x = [0f32; 4];
        assert!(check_buffer(x.as_ptr(), 4, false, "x", None).is_ok());
        assert!(check_buffer(core::ptr::null::<f32>(), 0, false, "x", None).is_ok());
        let e = check_buffer(core::ptr::null::<f32>(), 1, false, "x", None).unwrap_err();
        assert_eq!(e.code, VSGD_RESULT_NULL_PARAMETER);
        let odd = x.as_ptr().cast::<u8>().wrapping_add(1).cast::<f32>();
        let e = check_buffer(odd, 1, false, "x", Some(2)).unwrap_err();
        assert_eq!(e.code, VSGD_RESULT_MISALIGNED_BUFFER);
        assert!(e.message.contains("x[2]"));
        let e = check_buffer(x.as_ptr(), usize::MAX / 2, false, "x", None).unwrap_err();
        assert_eq!(e.code, VSGD_RESULT_BUFFER_TOO_LARGE);
    }
}
