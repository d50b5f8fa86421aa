//! CPU feature detection, done once, and the choice of ISA level.
//!
//! Every dispatched kernel asks [`active`] (a cached load) which level to run:
//! the best this CPU has unless the application [`force`]d one (t5edge reads
//! `T5EDGE_ISA` at its edge, `t5edge::runtime`, and hands the level over; this
//! crate reads no environment). A level the CPU lacks is refused with a
//! message rather than silently downgraded, so a benchmark or test that names
//! a path really runs it.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level, from the plain scalar fallback up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, no explicit SIMD: the twin every other path is checked against.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64-v3).
    Avx2,
    /// AVX-512 F/BW/VL.
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// AVX-512 VNNI with AMX-INT8 tiles (`tdpbssd`) for int8 products of
    /// [`crate::int8::AMX_MIN_M`] rows or more; everything else as
    /// `Avx512Vnni`. Needs the OS to grant the tile state (Linux 5.16+).
    Amx,
    /// AArch64 NEON (with `sdot` where the CPU has dotprod). On x86 this level
    /// exists only as the emulated intrinsics layer the tests use.
    Neon,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Vnni,
        Isa::Amx,
        Isa::Neon,
    ];

    /// The level's name, as `T5EDGE_ISA` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
        }
    }

    /// The level `s` names (case and surrounding spaces ignored).
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run the level natively.
    pub fn supported(self) -> bool {
        let f = features();
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => f.avx2 && f.fma && f.f16c,
            Isa::Avx512 => f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl,
            Isa::Avx512Vnni => Isa::Avx512.supported() && f.avx512vnni,
            Isa::Amx => Isa::Avx512Vnni.supported() && f.amx,
            Isa::Neon => f.neon,
        }
    }

    /// Whether the level is an x86 one from `Avx2` up: all of them have AVX2
    /// and run the AVX2 bodies shared across them.
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni | Isa::Amx)
    }

    /// Whether the level has AVX-512 F/BW/VL: `Avx512` and the levels above.
    pub fn has_avx512(self) -> bool {
        matches!(self, Isa::Avx512 | Isa::Avx512Vnni | Isa::Amx)
    }

    /// Whether the level has AVX-512 VNNI (`vpdpbusd`): `Avx512Vnni`, and
    /// `Amx` for what its tiles do not take.
    pub fn has_vnni(self) -> bool {
        matches!(self, Isa::Avx512Vnni | Isa::Amx)
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(c: u8) -> Option<Isa> {
        Isa::ALL.get(c.checked_sub(1)? as usize).copied()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The CPU features the kernels care about, as std's runtime detection reports them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuFeatures {
    /// AVX2.
    pub avx2: bool,
    /// FMA3.
    pub fma: bool,
    /// F16C (f16 <-> f32 conversion).
    pub f16c: bool,
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 byte and word instructions.
    pub avx512bw: bool,
    /// AVX-512 on 128- and 256-bit vectors.
    pub avx512vl: bool,
    /// AVX-512 VNNI (`vpdpbusd`).
    pub avx512vnni: bool,
    /// AVX-VNNI (the 256-bit VEX form).
    pub avxvnni: bool,
    /// AVX-512 BF16 (`vdpbf16ps`): bf16 prefill at the AVX-512 levels.
    pub avx512bf16: bool,
    /// AMX-TILE and AMX-INT8, with the tile state granted by the OS.
    pub amx: bool,
    /// AMX-BF16 (`tdpbf16ps`), with `amx`: the opt-in bf16 prefill's tiles.
    pub amx_bf16: bool,
    /// AArch64 Advanced SIMD.
    pub neon: bool,
    /// AArch64 dot product (`sdot`).
    pub dotprod: bool,
    /// AArch64 half-precision arithmetic.
    pub fp16: bool,
}

impl CpuFeatures {
    /// The names of the detected features, for `t5edge inspect`.
    pub fn names(&self) -> Vec<&'static str> {
        let all = [
            (self.avx2, "avx2"),
            (self.fma, "fma"),
            (self.f16c, "f16c"),
            (self.avx512f, "avx512f"),
            (self.avx512bw, "avx512bw"),
            (self.avx512vl, "avx512vl"),
            (self.avx512vnni, "avx512vnni"),
            (self.avxvnni, "avxvnni"),
            (self.avx512bf16, "avx512bf16"),
            (self.amx, "amx"),
            (self.amx_bf16, "amx_bf16"),
            (self.neon, "neon"),
            (self.dotprod, "dotprod"),
            (self.fp16, "fp16"),
        ];
        all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect()
    }
}

/// Detects the CPU once.
pub fn features() -> CpuFeatures {
    static F: std::sync::OnceLock<CpuFeatures> = std::sync::OnceLock::new();
    *F.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    let amx = amx_granted();
    CpuFeatures {
        avx2: is_x86_feature_detected!("avx2"),
        fma: is_x86_feature_detected!("fma"),
        f16c: is_x86_feature_detected!("f16c"),
        avx512f: is_x86_feature_detected!("avx512f"),
        avx512bw: is_x86_feature_detected!("avx512bw"),
        avx512vl: is_x86_feature_detected!("avx512vl"),
        avx512vnni: is_x86_feature_detected!("avx512vnni"),
        avxvnni: is_x86_feature_detected!("avxvnni"),
        avx512bf16: is_x86_feature_detected!("avx512bf16"),
        amx,
        // CPUID leaf 7: EDX bit 22; the tile state is what `amx` granted.
        amx_bf16: amx && std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22) != 0,
        ..Default::default()
    }
}

/// Whether the CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7: EDX bits 24 and
/// 25), the OS enables the tile state in XCR0 (bits 17 and 18), and Linux
/// grants this process the tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`; without it the first tile instruction faults).
#[cfg(target_arch = "x86_64")]
fn amx_granted() -> bool {
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    if leaf7.edx & (0b11 << 24) != 0b11 << 24 {
        return false;
    }
    // OSXSAVE (CPUID.1:ECX bit 27) says xgetbv may run.
    if std::arch::x86_64::__cpuid(1).ecx & (1 << 27) == 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: xgetbv with ecx = 0 reads XCR0; OSXSAVE was checked above.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi, options(nomem, nostack, preserves_flags));
    }
    if lo & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    request_tile_data()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: the arch_prctl system call with these arguments only changes
    // which extended states this process may use; the kernel clobbers rcx
    // and r11 (declared) and returns in rax.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Other systems: the tiles are not used (no way to ask for them here).
#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_data() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn detect() -> CpuFeatures {
    CpuFeatures {
        neon: std::arch::is_aarch64_feature_detected!("neon"),
        dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
        fp16: std::arch::is_aarch64_feature_detected!("fp16"),
        ..Default::default()
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}

/// The best level this CPU runs natively.
pub fn best() -> Isa {
    *Isa::ALL
        .iter()
        .rev()
        .find(|i| i.supported())
        .unwrap_or(&Isa::Scalar)
}

/// Why a forced level was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsaError {
    /// The name is no level's.
    Unknown(String),
    /// The level exists but this CPU cannot run it.
    Unsupported(Isa),
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(s) => write!(
                f,
                "{s:?} is not a level; use one of scalar, avx2, avx512, avx512vnni, amx, neon"
            ),
            IsaError::Unsupported(i) => write!(
                f,
                "{i} was requested but this CPU lacks it (detected: {})",
                features().names().join(", ")
            ),
        }
    }
}

impl std::error::Error for IsaError {}

static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The level named `name` (as [`Isa::parse`] reads it) if this CPU runs it:
/// what an application checks a requested level with before [`force`].
pub fn requested(name: &str) -> Result<Isa, IsaError> {
    let isa = Isa::parse(name).ok_or_else(|| IsaError::Unknown(name.to_string()))?;
    if isa.supported() {
        Ok(isa)
    } else {
        Err(IsaError::Unsupported(isa))
    }
}

/// The level kernels run at: the one [`force`]d, else the best this CPU has.
pub fn active() -> Isa {
    if let Some(i) = Isa::from_code(ACTIVE.load(Ordering::Relaxed)) {
        return i;
    }
    let isa = best();
    ACTIVE.store(isa.code(), Ordering::Relaxed);
    isa
}

/// Sets the level for the whole process (the application's choice, e.g. from
/// `T5EDGE_ISA`; benches). Refuses a level the CPU cannot run.
pub fn force(isa: Isa) -> Result<(), IsaError> {
    if !isa.supported() {
        return Err(IsaError::Unsupported(isa));
    }
    ACTIVE.store(isa.code(), Ordering::Relaxed);
    Ok(())
}

/// The levels this CPU runs natively, lowest first.
pub fn available() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.supported()).collect()
}
