//! The arena's placement rules, through the allocator's own `GlobalAlloc` methods on a private
//! instance (the process's global allocator is untouched).

use std::alloc::{GlobalAlloc, Layout};

use dosewitness_hotmem::{LARGE, PackedLarge};

const MIB: usize = 1 << 20;

fn layout(bytes: usize) -> Layout {
    Layout::from_size_align(bytes, 64).unwrap_or_else(|e| panic!("layout of {bytes}: {e}"))
}

#[test]
fn a_freed_pair_of_neighbours_serves_a_block_as_large_as_both() {
    let heap = PackedLarge::new(64 * MIB);
    // SAFETY: (test) every block is freed with the layout it was allocated with.
    unsafe {
        let a = heap.alloc(layout(MIB));
        let b = heap.alloc(layout(MIB));
        let c = heap.alloc(layout(MIB));
        assert!(heap.owns(a) && heap.owns(b) && heap.owns(c));
        assert_eq!(
            a as usize % (2 << 20),
            0,
            "the arena starts on a huge-page boundary"
        );
        assert_eq!(
            b as usize,
            a as usize + MIB,
            "blocks are packed from the bottom"
        );
        let shown = format!("{heap:?}");
        assert!(shown.contains("live_blocks: 3, free_ranges: 1"), "{shown}");
        heap.dealloc(a, layout(MIB));
        heap.dealloc(b, layout(MIB));
        // 2 MiB fits exactly where a and b were: lowest address first, the two coalesced.
        let ab = heap.alloc(layout(2 * MIB));
        assert_eq!(ab, a);
        heap.dealloc(ab, layout(2 * MIB));
        heap.dealloc(c, layout(MIB));
        // Everything freed: the whole arena is one range again, from the bottom.
        let all = heap.alloc(layout(3 * MIB));
        assert_eq!(all, a);
        heap.dealloc(all, layout(3 * MIB));
    }
}

#[test]
fn the_lowest_gap_that_fits_wins_over_fresher_memory_above() {
    let heap = PackedLarge::new(64 * MIB);
    // SAFETY: (test) every block is freed with the layout it was allocated with.
    unsafe {
        let low = heap.alloc(layout(MIB));
        let keep = heap.alloc(layout(MIB));
        let high = heap.alloc(layout(MIB));
        heap.dealloc(low, layout(MIB));
        heap.dealloc(high, layout(MIB));
        // Both gaps fit; the lower one is taken although the higher one was freed last.
        let again = heap.alloc(layout(MIB / 2));
        assert_eq!(again, low);
        // A block too large for the low gap's rest goes above `keep`.
        let big = heap.alloc(layout(MIB));
        assert_eq!(big, high);
        for (ptr, bytes) in [(again, MIB / 2), (big, MIB), (keep, MIB)] {
            heap.dealloc(ptr, layout(bytes));
        }
    }
}

#[test]
fn small_blocks_page_aligned_ones_and_overflow_go_to_the_system_allocator() {
    let heap = PackedLarge::new(4 * MIB);
    // SAFETY: (test) every block is freed with the layout it was allocated with.
    unsafe {
        let small = heap.alloc(layout(LARGE - 1));
        assert!(!small.is_null() && !heap.owns(small));
        let huge_align = Layout::from_size_align(LARGE, 1 << 16).unwrap_or_else(|e| panic!("{e}"));
        let aligned = heap.alloc(huge_align);
        assert!(!aligned.is_null() && !heap.owns(aligned));
        assert_eq!(aligned as usize % (1 << 16), 0);
        let fits = heap.alloc(layout(3 * MIB));
        assert!(heap.owns(fits));
        // The arena has 1 MiB left: a 2 MiB block still succeeds, from the system allocator.
        let over = heap.alloc(layout(2 * MIB));
        assert!(!over.is_null() && !heap.owns(over));
        over.write_bytes(7, 2 * MIB);
        heap.dealloc(over, layout(2 * MIB));
        heap.dealloc(fits, layout(3 * MIB));
        heap.dealloc(aligned, huge_align);
        heap.dealloc(small, layout(LARGE - 1));
    }
}

#[test]
fn reused_blocks_are_zeroed_on_request_and_realloc_keeps_contents() {
    let heap = PackedLarge::new(64 * MIB);
    // SAFETY: (test) every block is freed with the layout it was allocated with, and only
    // bytes within a block are read or written.
    unsafe {
        let dirty = heap.alloc(layout(MIB));
        dirty.write_bytes(0xAB, MIB);
        heap.dealloc(dirty, layout(MIB));
        let zeroed = heap.alloc_zeroed(layout(MIB));
        assert_eq!(zeroed, dirty, "the same memory, reused");
        assert!(
            std::slice::from_raw_parts(zeroed, MIB)
                .iter()
                .all(|&b| b == 0)
        );

        // Small to large, large to larger, large to small: contents survive each move.
        let small = heap.alloc(layout(1000));
        for i in 0..1000 {
            small.add(i).write((i % 251) as u8);
        }
        let grown = heap.realloc(small, layout(1000), 2 * MIB);
        assert!(heap.owns(grown));
        let grown = heap.realloc(grown, layout(2 * MIB), 3 * MIB);
        let shrunk = heap.realloc(grown, layout(3 * MIB), 500);
        assert!(!heap.owns(shrunk));
        let kept = std::slice::from_raw_parts(shrunk, 500);
        assert!(kept.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        heap.dealloc(shrunk, layout(500));
        heap.dealloc(zeroed, layout(MIB));
    }
}

#[test]
fn many_live_blocks_beyond_the_range_table_still_allocate() {
    let heap = PackedLarge::new(256 * MIB);
    let one = layout(LARGE);
    // SAFETY: (test) every block is freed with the layout it was allocated with.
    unsafe {
        let blocks: Vec<*mut u8> = (0..1500).map(|_| heap.alloc(one)).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        let in_arena = blocks.iter().filter(|&&p| heap.owns(p)).count();
        assert!(
            in_arena > 1000 && in_arena < 1500,
            "{in_arena} of 1500 in the arena"
        );
        // Free every other one (no two neighbours coalesce), then the rest.
        for pass in [0, 1] {
            for p in blocks.iter().skip(pass).step_by(2) {
                heap.dealloc(*p, one);
            }
        }
        // All free again: one range from the bottom.
        let first = blocks[0];
        let all = heap.alloc(layout(in_arena * LARGE));
        assert_eq!(all, first);
        heap.dealloc(all, layout(in_arena * LARGE));
    }
}
