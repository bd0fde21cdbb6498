//! `NW_SOURCES` (one 3.6 MiB [`SrcTables`] value per generation) and `NW_SRC_BUCKETS` (the
//! source hash: 16 MiB of [`SrcBucket`]s per generation) mapped into the agent's memory.
//!
//! The maps are created `BPF_F_MMAPABLE`, so the agent reads and writes the tables in place: a
//! re-apply that changes one CIDR rewrites the few node and class entries that differ, where a
//! map update would copy the whole value twice (into a kernel buffer, then into the map) and
//! needs a buffer of that size in the kernel (physically contiguous before Linux 5.15).
//!
//! The program only reads the generation the switch points at, and the agent only writes the
//! other one, then flips the switch with a syscall, after a fence: the program never sees a
//! half-written generation.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{fence, Ordering};

use anyhow::{Context, Result};
use nodewall_common::xdp::{SrcBucket, SrcTables, GENERATIONS, SRC_BUCKETS_PER_GEN};

// An array's values are 8-byte aligned and follow each other, and the kernel maps them from
// offset 0, in whole pages: values whose size is a multiple of 8 need no padding for that.
const _: () = assert!(std::mem::size_of::<SrcTables>().is_multiple_of(8));
const _: () = assert!(std::mem::size_of::<SrcBucket>().is_multiple_of(8));

/// A map of `T`s, `per_gen` of them per generation, mapped whole.
pub struct Mapped<T> {
    base: *mut T,
    len: usize,
    per_gen: usize,
}

/// `NW_SOURCES`: one value per generation.
pub type MappedSources = Mapped<SrcTables>;
/// `NW_SRC_BUCKETS`.
pub type MappedBuckets = Mapped<SrcBucket>;

// SAFETY: the mapping is owned by this value, which only hands out references tied to its own
// borrows; the program's concurrent reads are of the other generation (see the module docs).
unsafe impl<T> Send for Mapped<T> {}

impl MappedSources {
    /// Maps the whole of the `NW_SOURCES` map behind `fd`.
    pub fn map(fd: BorrowedFd<'_>) -> Result<Self> {
        Mapped::map_values(fd, 1)
            .context("mapping the source tables (a map created without BPF_F_MMAPABLE?)")
    }

    /// Generation `gen`'s tables.
    pub fn get(&self, gen: u32) -> &SrcTables {
        &self.generation(gen)[0]
    }

    /// Generation `gen`'s tables, to write before the switch points at it.
    pub fn get_mut(&mut self, gen: u32) -> &mut SrcTables {
        &mut self.generation_mut(gen)[0]
    }
}

impl MappedBuckets {
    /// Maps the whole of the `NW_SRC_BUCKETS` map behind `fd`.
    pub fn map(fd: BorrowedFd<'_>) -> Result<Self> {
        Mapped::map_values(fd, SRC_BUCKETS_PER_GEN as usize)
            .context("mapping the source hash (a map created without BPF_F_MMAPABLE?)")
    }
}

impl<T> Mapped<T> {
    fn map_values(fd: BorrowedFd<'_>, per_gen: usize) -> Result<Self> {
        let len = (std::mem::size_of::<T>() * per_gen * GENERATIONS as usize)
            .next_multiple_of(page_size());
        // SAFETY: a fresh shared mapping of a BPF map descriptor; the kernel checks the length
        // against the map's size and refuses maps not created mmapable.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Self {
            base: p.cast(),
            len,
            per_gen,
        })
    }

    /// Generation `gen`'s values.
    pub fn generation(&self, gen: u32) -> &[T] {
        assert!(gen < GENERATIONS);
        // SAFETY: in bounds (the mapping holds GENERATIONS * per_gen values) and aligned
        // (page-aligned base, 8-byte-sized values); the program never writes the map.
        unsafe {
            std::slice::from_raw_parts(self.base.add(gen as usize * self.per_gen), self.per_gen)
        }
    }

    /// Generation `gen`'s values, to write before the switch points at it.
    pub fn generation_mut(&mut self, gen: u32) -> &mut [T] {
        assert!(gen < GENERATIONS);
        // SAFETY: as in `generation`; `&mut self` makes this the only reference from this
        // process.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.add(gen as usize * self.per_gen), self.per_gen)
        }
    }

    /// Orders the writes to the tables before the switch flip that publishes them (a syscall
    /// is a barrier on x86 but need not be on every architecture).
    pub fn publish() {
        fence(Ordering::SeqCst);
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which no reference outlives.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}
