//! A cache of big memory blocks in front of the system allocator, for programs that train: a
//! training step allocates the same activation- and gradient-sized buffers step after step, and
//! glibc serves each one by searching and splitting its free chunks (`_int_malloc`,
//! `unlink_chunk`, `malloc_consolidate` on frees), on the thread that issues the kernel while
//! the others wait: a third of what a YOLO26n step still ran on one thread (`bench/PROFILE.md`).
//! Here a freed block of 64 KiB or more goes onto a stack for its size class and the next
//! request of that class takes it back, with one uncontended lock.
//!
//! Size classes: 8 per power of two (a block is at most 12.5% larger than asked for), from
//! 64 KiB to 16 GiB; every cached block is 64-byte aligned. At most [`BlockCache::LIMIT`] bytes
//! wait in the cache (beyond that a freed block goes back to the system allocator), at most
//! [`SLOTS`] blocks per class, and a class not asked for during [`STALE`] requests gives its
//! blocks back when a request misses. Smaller or more strictly aligned requests pass straight
//! through.
//!
//! A program opts in with
//! `#[global_allocator] static ALLOC: gradscope::alloc::BlockCache = gradscope::alloc::BlockCache::new();`
//! (the CLI and the benchmarks do). It changes where buffers live, never what is computed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The smallest block the cache keeps (bytes).
pub const MIN: usize = 64 << 10;
/// Blocks kept per size class at most.
pub const SLOTS: usize = 64;
/// The alignment of every cached block (and the largest a cached request may ask for).
const ALIGN: usize = 64;
/// Size classes per power of two: 2^SUB_BITS.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two covered: 2^16 (64 KiB) to 2^34 (16 GiB).
const OCTAVES: usize = 18;
const CLASSES: usize = OCTAVES * SUB;

/// A class whose blocks have not been asked for during this many cacheable requests gives them
/// back to the system allocator at the next request the cache cannot serve.
pub const STALE: usize = 1 << 12;

/// One size class's free blocks (addresses), a fixed-size stack (the cache allocates nothing),
/// and the request count when the class was last used.
struct Stack {
    len: usize,
    used: usize,
    blocks: [usize; SLOTS],
}

/// The system allocator with a cache of big blocks by size class (see the module).
pub struct BlockCache {
    classes: [Mutex<Stack>; CLASSES],
    cached: AtomicUsize,
    /// Cacheable requests so far (the cache's clock).
    requests: AtomicUsize,
    /// The clock at the last look for stale classes.
    swept: AtomicUsize,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache::new()
    }
}

/// The size class of a request of `size` bytes (≥ [`MIN`]) and the class's block size, or
/// `None` past the largest class.
fn class_of(size: usize) -> Option<(usize, usize)> {
    let octave = (usize::BITS - 1 - size.leading_zeros()) as usize; // 2^octave ≤ size
    let step = 1usize << (octave - SUB_BITS as usize); // SUB steps per octave
    let k = size.div_ceil(step); // SUB..=2·SUB
    let (octave, k) = if k == 2 * SUB {
        (octave + 1, SUB)
    } else {
        (octave, k)
    };
    let index = (octave.checked_sub(16)?) * SUB + (k - SUB);
    (index < CLASSES).then(|| (index, k << (octave - SUB_BITS as usize)))
}

/// The block size of class `index` (the inverse of [`class_of`]).
fn block_of(index: usize) -> usize {
    (SUB + index % SUB) << (16 + index / SUB - SUB_BITS as usize)
}

impl BlockCache {
    /// Bytes waiting in the cache at most (1 GiB).
    pub const LIMIT: usize = 1 << 30;

    /// An empty cache (a `const fn`, for a `static`).
    pub const fn new() -> Self {
        const EMPTY: Mutex<Stack> = Mutex::new(Stack {
            len: 0,
            used: 0,
            blocks: [0; SLOTS],
        });
        BlockCache {
            classes: [EMPTY; CLASSES],
            cached: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            swept: AtomicUsize::new(0),
        }
    }

    /// Cacheable requests so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes now waiting in the cache.
    pub fn cached_bytes(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    /// The class and block size a request goes to, `None` when it passes through.
    fn cacheable(layout: Layout) -> Option<(usize, usize)> {
        if layout.size() < MIN || layout.align() > ALIGN {
            return None;
        }
        class_of(layout.size())
    }

    /// A cached block of class `class` (`block` bytes), if one waits; else the blocks of stale
    /// classes go back to the system allocator, which can then reuse their memory for this
    /// request (a new phase of a program, such as validation after training, needs other sizes:
    /// without this the old phase's blocks would sit beside the new ones).
    fn take(&self, class: usize, block: usize) -> Option<*mut u8> {
        let now = self.requests.fetch_add(1, Ordering::Relaxed);
        {
            let mut s = self.classes[class].lock().ok()?;
            s.used = now;
            if s.len > 0 {
                s.len -= 1;
                self.cached.fetch_sub(block, Ordering::Relaxed);
                return Some(s.blocks[s.len] as *mut u8);
            }
        }
        if now.saturating_sub(self.swept.load(Ordering::Relaxed)) >= STALE / 4 {
            self.swept.store(now, Ordering::Relaxed);
            self.release_stale(now);
        }
        None
    }

    /// Frees the blocks of every class not used during the last [`STALE`] requests.
    fn release_stale(&self, now: usize) {
        for (index, class) in self.classes.iter().enumerate() {
            let Ok(mut s) = class.try_lock() else {
                continue;
            };
            if s.len == 0 || now.saturating_sub(s.used) < STALE {
                continue;
            }
            let block = block_of(index);
            for &p in &s.blocks[..s.len] {
                // SAFETY: a cached block of this class, allocated by System with this layout.
                unsafe { System.dealloc(p as *mut u8, block_layout(block)) };
            }
            self.cached.fetch_sub(s.len * block, Ordering::Relaxed);
            s.len = 0;
        }
    }

    /// Keeps a freed block of class `class`; false when the cache is full (the caller frees it).
    fn keep(&self, class: usize, block: usize, ptr: *mut u8) -> bool {
        if self.cached.load(Ordering::Relaxed) + block > Self::LIMIT {
            return false;
        }
        let Ok(mut s) = self.classes[class].lock() else {
            return false;
        };
        if s.len == SLOTS {
            return false;
        }
        let len = s.len;
        s.used = self.requests.load(Ordering::Relaxed);
        s.blocks[len] = ptr as usize;
        s.len += 1;
        self.cached.fetch_add(block, Ordering::Relaxed);
        true
    }
}

/// The layout every block of `block` bytes is allocated with.
fn block_layout(block: usize) -> Layout {
    // block ≥ MIN is a multiple of ALIGN (a power of two) and below isize::MAX
    Layout::from_size_align(block, ALIGN).expect("a valid block layout")
}

// SAFETY: every block the cache hands out was allocated by `System` with `block_layout(b)` for
// the `b` of its class, is at least as large as the request (`class_of` rounds up) and aligned
// to 64 ≥ the request's alignment; a cached block is owned by the cache alone (popped under its
// class's lock before it is handed out); and a block freed with a layout of class `c` was
// allocated for a request of class `c` (Rust deallocates with the layout it allocated with), so
// it goes back to `System` with the layout it came with. Requests that are not cacheable go to
// `System` unchanged, in both directions.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::cacheable(layout) {
            Some((class, block)) => match self.take(class, block) {
                Some(p) => p,
                // SAFETY: a non-zero size.
                None => unsafe { System.alloc(block_layout(block)) },
            },
            // SAFETY: the caller's layout, as it asked.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::cacheable(layout) {
            Some((class, block)) => match self.take(class, block) {
                Some(p) => {
                    // SAFETY: the block holds at least layout.size() bytes.
                    unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                    p
                }
                // SAFETY: a non-zero size.
                None => unsafe { System.alloc_zeroed(block_layout(block)) },
            },
            // SAFETY: the caller's layout, as it asked.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match Self::cacheable(layout) {
            Some((class, block)) => {
                if !self.keep(class, block, ptr) {
                    // SAFETY: the block came from System with this layout (see above).
                    unsafe { System.dealloc(ptr, block_layout(block)) }
                }
            }
            // SAFETY: allocated by System with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size > 0 and a valid layout with the old alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::cacheable(layout), Self::cacheable(new)) {
            // SAFETY: both small: System's own block, resized by System.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            // the block of the old class already holds the new size
            (Some((a, _)), Some((b, _))) if a == b => ptr,
            _ => {
                // SAFETY: alloc and dealloc above; the copy stays within both blocks.
                unsafe {
                    let p = self.alloc(new);
                    if !p.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    p
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_by_at_most_an_eighth() {
        assert_eq!(class_of(MIN), Some((0, MIN)));
        assert_eq!(class_of(MIN + 1), Some((1, MIN + MIN / 8)));
        assert_eq!(class_of(2 * MIN - 1), Some((SUB, 2 * MIN)));
        assert_eq!(class_of(2 * MIN), Some((SUB, 2 * MIN)));
        let mut last = 0;
        for size in (MIN..64 << 20).step_by(4093) {
            let (class, block) = class_of(size).unwrap();
            assert!(block >= size && block - size <= size / 8, "{size}: {block}");
            assert!(class >= last && block.is_multiple_of(ALIGN));
            last = class;
        }
        assert!(class_of(1 << 34).is_none(), "past 16 GiB");
        for index in 0..CLASSES {
            assert_eq!(class_of(block_of(index)), Some((index, block_of(index))));
        }
    }

    #[test]
    fn blocks_of_a_class_left_unused_go_back_when_another_class_misses() {
        let cache = BlockCache::new();
        let old = Layout::from_size_align(MIN, 8).unwrap();
        let new = Layout::from_size_align(4 * MIN, 8).unwrap();
        // SAFETY: valid layouts; each block freed once with its layout.
        unsafe {
            let a = cache.alloc(old);
            cache.dealloc(a, old);
            assert_eq!(cache.cached_bytes(), MIN);
            // requests of another class, all served from the cache: the old block stays
            let b = cache.alloc(new);
            cache.dealloc(b, new);
            for _ in 0..STALE {
                let b2 = cache.alloc(new);
                cache.dealloc(b2, new);
            }
            assert_eq!(cache.cached_bytes(), MIN + 4 * MIN);
            // a request the cache cannot serve: the stale class's block goes back
            let c = cache.alloc(new);
            let d = cache.alloc(new);
            assert_eq!(cache.cached_bytes(), 0);
            cache.dealloc(c, new);
            cache.dealloc(d, new);
        }
    }

    #[test]
    fn a_freed_block_is_handed_out_again_and_small_ones_pass_through() {
        let cache = BlockCache::new();
        let big = Layout::from_size_align(300_000, 8).unwrap();
        // SAFETY: the layouts are valid; every block is freed with the layout it came with.
        unsafe {
            let a = cache.alloc(big);
            assert!(!a.is_null() && (a as usize).is_multiple_of(ALIGN));
            a.write_bytes(7, big.size());
            cache.dealloc(a, big);
            assert_eq!(cache.cached_bytes(), class_of(300_000).unwrap().1);
            // the same class (a slightly different size): the same block, zeroed when asked
            let other = Layout::from_size_align(299_000, 4).unwrap();
            let b = cache.alloc_zeroed(other);
            assert_eq!(a, b);
            assert_eq!(cache.cached_bytes(), 0);
            assert!(std::slice::from_raw_parts(b, other.size())
                .iter()
                .all(|&x| x == 0));
            // growing within the class keeps the block; past it moves the bytes
            b.write_bytes(3, other.size());
            let c = cache.realloc(b, other, 300_000);
            assert_eq!(c, b);
            let grown = Layout::from_size_align(300_000, 4).unwrap();
            let d = cache.realloc(c, grown, 2_000_000);
            assert!(std::slice::from_raw_parts(d, other.size())
                .iter()
                .all(|&x| x == 3));
            cache.dealloc(d, Layout::from_size_align(2_000_000, 4).unwrap());
            // a small request and an over-aligned one bypass the cache
            let small = Layout::from_size_align(100, 8).unwrap();
            let s = cache.alloc(small);
            cache.dealloc(s, small);
            let aligned = Layout::from_size_align(MIN, 4096).unwrap();
            let p = cache.alloc(aligned);
            assert!((p as usize).is_multiple_of(4096));
            cache.dealloc(p, aligned);
            assert_eq!(
                cache.cached_bytes(),
                class_of(300_000).unwrap().1 + class_of(2_000_000).unwrap().1
            );
        }
    }

    #[test]
    fn the_cache_holds_at_most_its_slots_per_class() {
        let cache = BlockCache::new();
        let l = Layout::from_size_align(MIN, 8).unwrap();
        // SAFETY: valid layouts; each block freed once with its layout.
        unsafe {
            let blocks: Vec<*mut u8> = (0..SLOTS + 5).map(|_| cache.alloc(l)).collect();
            for &b in &blocks {
                cache.dealloc(b, l);
            }
            assert_eq!(cache.cached_bytes(), SLOTS * MIN);
            let again: Vec<*mut u8> = (0..SLOTS).map(|_| cache.alloc(l)).collect();
            assert_eq!(cache.cached_bytes(), 0);
            for b in again {
                cache.dealloc(b, l);
            }
        }
    }
}
