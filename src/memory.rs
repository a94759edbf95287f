//! Keeping the resident set small: glibc's allocator tuned at start.
//!
//! A login verifies an argon2id hash, which allocates 19 MiB at once. glibc
//! serves the first such request with mmap, but when it is freed it raises its
//! mmap threshold to that size, so every later one comes from the heap and
//! stays resident: four concurrent logins left a server at 105 MiB for good.
//! Pinning the threshold (which also stops it adapting) sends every large
//! allocation to mmap and back to the system on free; 1 MiB data blocks stay
//! below it and are reused from the heap. Capping the arenas stops each
//! blocking-pool thread from growing a heap of its own.
//!
//! Pinning the threshold also pins the trim threshold at glibc's 128 KiB:
//! whenever more than that was free at the top of a heap, free() gave it
//! back, and the next 1 MiB block faulted it in again, zeroed page by page.
//! Streaming 1 GiB, a server took about 70 000 page faults in 6 s, and its
//! copies out of the socket (the first touch of those pages) were 41 % of
//! its CPU. A trim threshold of 32 MiB keeps a transfer's blocks (about 4 MiB
//! a chunk stream) in place: 1 300 faults, about a fifth less CPU per GiB.
//! What stays is at most what a transfer used at its peak.

/// Allocations from this size up are mmapped and returned when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 4 << 20;
/// Free memory at the top of a heap beyond this goes back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 32 << 20;
/// Most malloc arenas (glibc's default is 8 per core).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: i32 = 2;

/// Call once, first thing in `main`. Elsewhere than glibc it does nothing.
pub fn limit_retained_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any
    // other thread exists, and the values are in glibc's documented ranges.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}
