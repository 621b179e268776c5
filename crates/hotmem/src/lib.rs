//! A global allocator for inference: large blocks (activation tensors, 64 KiB and up) come from
//! one reserved arena, lowest free address first, and coalesce when freed; everything else goes
//! to the system allocator.
//!
//! Why: tract allocates each layer's output afresh. Under glibc, a large buffer often lands on
//! memory no layer has touched for tens of megabytes of traffic (the 3.2 MB output of hand
//! landmarks' first expansion, every time), so each of its lines is fetched from DRAM before
//! it is written. ONNX Runtime plans its buffers into an arena and reuses the same few
//! megabytes. Packing large blocks low in one arena does the same without a plan: every model
//! reuses the arena's bottom, which stays in cache.
//!
//! The arena is address space only (`MAP_NORESERVE`): pages are committed as they are first
//! written and stay committed after a free, like a heap that is never trimmed, so the
//! process keeps its peak working set of large blocks. It starts on a 2 MiB boundary and asks
//! for transparent huge pages (`MADV_HUGEPAGE`), as the binary's glibc heap does
//! (`src/huge_pages.rs`), unless `DOSEWITNESS_HUGE_PAGES` is `0` or `off`.
//!
//! A block that does not fit (arena full, too many blocks, alignment above a page) goes to the
//! system allocator; nothing fails that the system allocator would not fail.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Blocks of this size and more come from the arena.
pub const LARGE: usize = 64 << 10;
/// Arena blocks are whole pages, so any alignment up to a page holds.
const PAGE: usize = 4096;
/// Free ranges (and so live arena blocks) the allocator tracks at most.
const RANGES: usize = 1024;
/// The arena starts on a transparent-huge-page boundary (x86-64 and most aarch64 kernels).
const HUGE_PAGE: usize = 2 << 20;
/// Set to `0` or `off` to keep the arena on small pages (the binary's opt-out for huge pages).
pub const HUGE_PAGES_OPT_OUT: &str = "DOSEWITNESS_HUGE_PAGES";

/// Whether a [`HUGE_PAGES_OPT_OUT`] value turns huge pages off (`0` or `off`, any case): the one
/// rule for the arena here and for the binary's glibc heap (`src/huge_pages.rs`).
pub fn huge_pages_opted_out(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|value| value == "0" || value.eq_ignore_ascii_case("off"))
}

/// Whether to ask for transparent huge pages: unless [`HUGE_PAGES_OPT_OUT`] says no. Read when
/// the arena is reserved (its few small allocations go to the system allocator).
fn huge_pages_wanted() -> bool {
    !huge_pages_opted_out(std::env::var_os(HUGE_PAGES_OPT_OUT).as_deref())
}

/// The global allocator; `const`, for a `#[global_allocator]` static.
pub struct PackedLarge {
    arena_bytes: usize,
    /// Start of the reserved range; 0 before the first large block, `usize::MAX` when the
    /// reservation failed (then everything goes to the system allocator). Set once, under
    /// `state`'s lock; read without it, so telling a block's owner takes no lock.
    base: AtomicUsize,
    state: Mutex<Arena>,
}

/// Counts, not the range table (1024 entries).
impl std::fmt::Debug for PackedLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let arena = self.arena();
        f.debug_struct("PackedLarge")
            .field("arena_bytes", &self.arena_bytes)
            .field("live_blocks", &arena.live)
            .field("free_ranges", &arena.free_len)
            .finish()
    }
}

struct Arena {
    /// Free ranges `(offset, len)`, sorted by offset, never adjacent (they coalesce).
    free: [(usize, usize); RANGES],
    free_len: usize,
    /// Live arena blocks: kept below `RANGES - 1` so a free can always record its range.
    live: usize,
}

impl PackedLarge {
    /// An allocator reserving `arena_bytes` of address space on its first large block.
    pub const fn new(arena_bytes: usize) -> Self {
        PackedLarge {
            arena_bytes,
            base: AtomicUsize::new(0),
            state: Mutex::new(Arena {
                free: [(0, 0); RANGES],
                free_len: 0,
                live: 0,
            }),
        }
    }

    fn arena(&self) -> std::sync::MutexGuard<'_, Arena> {
        // Nothing panics while holding the lock; a poisoned one still guards a sound list.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `ptr` lies in this allocator's arena.
    pub fn owns(&self, ptr: *const u8) -> bool {
        let base = self.base.load(Ordering::Acquire);
        base != 0 && base != usize::MAX && (base..base + self.arena_bytes).contains(&(ptr as usize))
    }

    /// Reserves the arena; called once, under `state`'s lock.
    fn reserve(&self, arena: &mut Arena) {
        // One huge page more than the arena, so the arena can start on a huge-page boundary.
        let reserved = self.arena_bytes + HUGE_PAGE;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
        // no existing memory; MAP_NORESERVE commits nothing until pages are written.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserved,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED || mapped.is_null() {
            self.base.store(usize::MAX, Ordering::Release);
            return;
        }
        let base = (mapped as usize).next_multiple_of(HUGE_PAGE);
        if huge_pages_wanted() {
            // Best effort: without it (THP off, or not Linux) the arena runs on small pages.
            // SAFETY: advice on a range of the mapping just made, which nothing else uses.
            unsafe {
                libc::madvise(
                    base as *mut libc::c_void,
                    self.arena_bytes,
                    libc::MADV_HUGEPAGE,
                )
            };
        }
        arena.free[0] = (0, self.arena_bytes);
        arena.free_len = 1;
        self.base.store(base, Ordering::Release);
    }

    /// The lowest free range of `size` bytes (whole pages), or `None`.
    fn take(&self, size: usize) -> Option<*mut u8> {
        let mut arena = self.arena();
        if self.base.load(Ordering::Acquire) == 0 {
            self.reserve(&mut arena);
        }
        let base = self.base.load(Ordering::Acquire);
        if base == usize::MAX || arena.live + 2 >= RANGES {
            return None;
        }
        let len = arena.free_len;
        let index = arena.free[..len]
            .iter()
            .position(|&(_, free)| free >= size)?;
        let (offset, free) = arena.free[index];
        if free == size {
            arena.free.copy_within(index + 1..len, index);
            arena.free_len -= 1;
        } else {
            arena.free[index] = (offset + size, free - size);
        }
        arena.live += 1;
        Some((base + offset) as *mut u8)
    }

    /// Gives `[ptr, ptr + size)` back, merging it with free neighbours.
    fn give(&self, ptr: *mut u8, size: usize) {
        let mut arena = self.arena();
        let offset = ptr as usize - self.base.load(Ordering::Acquire);
        let len = arena.free_len;
        let at = arena.free[..len].partition_point(|&(start, _)| start < offset);
        let joins_before = at > 0 && {
            let (start, free) = arena.free[at - 1];
            start + free == offset
        };
        let joins_after = at < len && offset + size == arena.free[at].0;
        match (joins_before, joins_after) {
            (true, true) => {
                arena.free[at - 1].1 += size + arena.free[at].1;
                arena.free.copy_within(at + 1..len, at);
                arena.free_len -= 1;
            }
            (true, false) => arena.free[at - 1].1 += size,
            (false, true) => arena.free[at] = (offset, size + arena.free[at].1),
            (false, false) => {
                // At most one range per live block plus one: `take` keeps room for this.
                arena.free.copy_within(at..len, at + 1);
                arena.free[at] = (offset, size);
                arena.free_len += 1;
            }
        }
        arena.live -= 1;
    }
}

fn arena_size(layout: Layout) -> Option<usize> {
    (layout.size() >= LARGE && layout.align() <= PAGE).then(|| layout.size().div_ceil(PAGE) * PAGE)
}

// SAFETY: arena blocks are disjoint whole pages of a private mapping, handed out once until
// freed (the free list never overlaps a live block); everything else is the system allocator's.
unsafe impl GlobalAlloc for PackedLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(size) = arena_size(layout)
            && let Some(ptr) = self.take(size)
        {
            return ptr;
        }
        // SAFETY: the caller's layout contract passes through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(size) = arena_size(layout)
            && let Some(ptr) = self.take(size)
        {
            // SAFETY: `ptr` is a fresh arena block of at least `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
            return ptr;
        }
        // SAFETY: the caller's layout contract passes through.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only large layouts were ever given arena blocks, so small frees skip the check.
        if layout.size() >= LARGE && self.owns(ptr) {
            // An arena pointer came from `take` with this layout's rounded size.
            let size = layout.size().div_ceil(PAGE) * PAGE;
            self.give(ptr, size);
        } else {
            // SAFETY: not an arena block, so the system allocator made it with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < LARGE && new_size < LARGE {
            // SAFETY: a system block staying small: the system allocator resizes its own.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_size` is non-zero and does not overflow when rounded to `layout`'s
        // alignment (GlobalAlloc::realloc's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as above, a valid non-zero layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
