//! The UMEM: one anonymous mapping of `frame_count` chunks of [`FRAME_SIZE`] bytes that
//! every socket of a [`crate::WorkerIo`] shares with the kernel.

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use crate::XskError;
use crate::sys;

/// Bytes per UMEM chunk (one frame). Aligned chunk mode: the kernel masks descriptor
/// addresses to their chunk, and a frame never crosses a chunk.
pub const FRAME_SIZE: usize = 4096;
pub(crate) const FRAME_SHIFT: u32 = 12;
const _: () = assert!(1 << FRAME_SHIFT == FRAME_SIZE);

const HUGE_PAGE: usize = 2 << 20;
/// More chunks than this would not be addressable by the frame pool's u32 indices and
/// would pin more than 4 GiB per worker.
pub const MAX_FRAMES: u32 = 1 << 20;

/// Whether the UMEM is backed by 2 MiB hugepages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HugepagePolicy {
    /// Hugepages when the kernel has enough reserved (`vm.nr_hugepages`), else 4 KiB pages.
    #[default]
    Auto,
    /// Hugepages or an error.
    Require,
    /// Always 4 KiB pages.
    Never,
}

/// The page size actually backing the UMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UmemBacking {
    Hugepages2M,
    Pages4K,
}

impl UmemBacking {
    pub fn name(self) -> &'static str {
        match self {
            UmemBacking::Hugepages2M => "2MiB-hugepages",
            UmemBacking::Pages4K => "4KiB-pages",
        }
    }
}

/// How to build a worker's UMEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UmemConfig {
    /// Number of frames (chunks of [`FRAME_SIZE`] bytes), 1..=[`MAX_FRAMES`].
    pub frame_count: u32,
    pub hugepages: HugepagePolicy,
}

impl Default for UmemConfig {
    /// 8,192 frames (32 MiB), hugepages when available.
    fn default() -> Self {
        UmemConfig {
            frame_count: 8192,
            hugepages: HugepagePolicy::Auto,
        }
    }
}

/// An anonymous mapping of `frame_count * FRAME_SIZE` bytes (rounded up to 2 MiB when
/// hugepage-backed). Unmapped on drop; the kernel keeps its own page references for as
/// long as a socket still has the UMEM registered.
pub(crate) struct Umem {
    base: NonNull<u8>,
    map_len: usize,
    len: usize,
    frames: u32,
    backing: UmemBacking,
}

impl Umem {
    pub(crate) fn new(cfg: &UmemConfig) -> Result<Umem, XskError> {
        if cfg.frame_count == 0 || cfg.frame_count > MAX_FRAMES {
            return Err(XskError::Config(format!(
                "frame_count {} out of range 1..={MAX_FRAMES}",
                cfg.frame_count
            )));
        }
        let len = cfg.frame_count as usize * FRAME_SIZE;
        let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;

        let huge = match cfg.hugepages {
            HugepagePolicy::Never => None,
            HugepagePolicy::Auto | HugepagePolicy::Require => {
                match map(huge_len, libc::MAP_HUGETLB | libc::MAP_HUGE_2MB) {
                    Ok(p) => Some(p),
                    Err(e) if cfg.hugepages == HugepagePolicy::Require => {
                        return Err(XskError::Hugepages {
                            bytes: huge_len,
                            source: e,
                        });
                    }
                    Err(e) => {
                        tracing::info!(
                            bytes = huge_len,
                            error = %e,
                            "no 2 MiB hugepages for the UMEM (vm.nr_hugepages); using 4 KiB pages"
                        );
                        None
                    }
                }
            }
        };
        let (base, map_len, backing) = match huge {
            Some(p) => (p, huge_len, UmemBacking::Hugepages2M),
            None => {
                let p = map(len, 0).map_err(|e| XskError::Sys {
                    op: "mmap of the UMEM",
                    source: e,
                })?;
                (p, len, UmemBacking::Pages4K)
            }
        };
        tracing::info!(
            frames = cfg.frame_count,
            bytes = len,
            backing = backing.name(),
            "UMEM mapped"
        );
        Ok(Umem {
            base,
            map_len,
            len,
            frames: cfg.frame_count,
            backing,
        })
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    pub(crate) fn frames(&self) -> u32 {
        self.frames
    }
    pub(crate) fn backing(&self) -> UmemBacking {
        self.backing
    }

    /// `XDP_UMEM_REG` on `fd`: aligned chunks of [`FRAME_SIZE`], headroom 0.
    pub(crate) fn register(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        register(fd, self.base.as_ptr() as u64, self.len as u64)
    }
}

/// `XDP_UMEM_REG` of `[addr, addr + len)` on `fd`. Free function so that the anchor
/// thread can register without borrowing the `Umem`.
pub(crate) fn register(fd: BorrowedFd<'_>, addr: u64, len: u64) -> io::Result<()> {
    let reg = libc::xdp_umem_reg {
        addr,
        len,
        chunk_size: FRAME_SIZE as u32,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    sys::setsockopt(fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)
}

fn map(len: usize, extra_flags: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at an address the kernel chooses; it aliases
    // no Rust object.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra_flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` describe exactly the mapping made in `new`, and no
        // reference into it outlives `self` (frame slices borrow the WorkerIo).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}
