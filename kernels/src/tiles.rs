//! The AMX tile state both tile kernels (`int8::amx`, `bf16::amx`) and the
//! tile probes use: one configuration, eight tile registers of 16 rows x 64
//! bytes, loaded before a tile loop and released after it.

use std::arch::asm;

/// The tile configuration `ldtilecfg` reads: palette 1, tiles 0..8 of 16
/// rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

static CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Configures `tmm0..tmm7` as 16 rows x 64 bytes each.
///
/// # Safety
/// The CPU runs [`crate::dispatch::Isa::Amx`] (AMX-TILE, the tile state
/// granted by the OS); the caller ends its tile loop with [`release`].
#[inline(always)]
pub unsafe fn configure() {
    // SAFETY: the contract; CONFIG is a valid palette-1 configuration, 64
    // bytes aligned.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
}

/// Releases the tile state [`configure`] set up.
///
/// # Safety
/// As [`configure`].
#[inline(always)]
pub unsafe fn release() {
    // SAFETY: the contract.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// Zeroes `tmm0..tmm3`, where both kernels sum a block.
///
/// # Safety
/// The tiles are configured ([`configure`]).
#[inline(always)]
pub(crate) unsafe fn zero_sums() {
    // SAFETY: the contract.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        )
    };
}

/// Loads `tmm0..tmm3` from four 16 x 16 tiles of 4-byte sums at `at`, one
/// 64-byte row each: a block's sums taken up again where
/// [`store_sums_at`] left them.
///
/// # Safety
/// The tiles are configured ([`configure`]); each `at[i]` points at 1 KiB
/// readable bytes.
#[inline(always)]
pub(crate) unsafe fn load_sums_at(at: [*const f32; 4]) {
    // SAFETY: the contract; each load reads one 1 KiB tile, 16 rows 64
    // bytes apart.
    unsafe {
        asm!(
            "tileloadd tmm0, [{c0} + {cs}*1]",
            "tileloadd tmm1, [{c1} + {cs}*1]",
            "tileloadd tmm2, [{c2} + {cs}*1]",
            "tileloadd tmm3, [{c3} + {cs}*1]",
            c0 = in(reg) at[0],
            c1 = in(reg) at[1],
            c2 = in(reg) at[2],
            c3 = in(reg) at[3],
            cs = in(reg) 64usize,
            options(nostack, readonly)
        )
    };
}

/// Stores `tmm0..tmm3` to four 16 x 16 tiles of 4-byte sums at `at`, one
/// 64-byte row each.
///
/// # Safety
/// The tiles are configured ([`configure`]); each `at[i]` points at 1 KiB
/// writable bytes.
#[inline(always)]
pub(crate) unsafe fn store_sums_at(at: [*mut f32; 4]) {
    // SAFETY: the contract; each store writes one 1 KiB tile, 16 rows 64
    // bytes apart.
    unsafe {
        asm!(
            "tilestored [{c0} + {cs}*1], tmm0",
            "tilestored [{c1} + {cs}*1], tmm1",
            "tilestored [{c2} + {cs}*1], tmm2",
            "tilestored [{c3} + {cs}*1], tmm3",
            c0 = in(reg) at[0],
            c1 = in(reg) at[1],
            c2 = in(reg) at[2],
            c3 = in(reg) at[3],
            cs = in(reg) 64usize,
            options(nostack)
        )
    };
}

/// Stores `tmm0..tmm3` to the four 16 x 16 tiles of 4-byte sums in `c`
/// (i32 for int8 products, f32 for bf16), one 64-byte row each.
///
/// # Safety
/// The tiles are configured ([`configure`]).
#[inline(always)]
pub(crate) unsafe fn store_sums<T: Copy>(c: &mut [[[T; 16]; 16]; 4]) {
    const { assert!(std::mem::size_of::<T>() == 4) };
    let at = c.each_mut().map(|t| t.as_mut_ptr().cast::<f32>());
    // SAFETY: the contract; each pointer is one 1 KiB tile of `c`.
    unsafe { store_sums_at(at) }
}
