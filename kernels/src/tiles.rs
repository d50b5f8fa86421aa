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
