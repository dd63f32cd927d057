//! `peers`: the command-line program (see the library for everything).

/// jemalloc serves every allocation of the process, RocksDB's C++ included
/// (the `unprefixed_malloc_on_supported_platforms` feature replaces
/// `malloc`). Against glibc's malloc, in the same sitting: `peers rebuild`
/// of 1M changes 23.7 s instead of 26.6 s, `peers verify` 25.9 s instead of
/// 28.6 s, and receiving a full sync of 1M changes peaks at 116-126 MiB
/// instead of 133-139 MiB (benches/README.md "the program's allocator"; DECISIONS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    give_back_freed_pages();
    peers::main()
}

/// jemalloc keeps freed pages for ten seconds by default, which a bulk write
/// (RocksDB frees a memtable's 4 MiB blocks after each flush) turns into
/// resident memory: a background thread gives them back after about a
/// second. Set before any other thread starts, so every arena takes it. A
/// write that fails leaves jemalloc's default, which is only slower to give
/// memory back.
fn give_back_freed_pages() {
    use tikv_jemalloc_ctl::{Access, AsName};
    const DIRTY_DECAY_MS: isize = 1000;
    let _ = b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS);
    let _ = b"arena.0.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS);
    let _ = b"background_thread\0".name().write(true);
}
