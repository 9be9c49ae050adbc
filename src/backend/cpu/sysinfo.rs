//! Facts about the host CPU for [`crate::DeviceInfo`]: model, vendor, SIMD width, memory.

pub(crate) struct SysInfo {
    pub model: String,
    pub vendor: String,
    pub simd_f32_lanes: u32,
    pub mem_bytes: u64,
}

/// Read `/proc/cpuinfo` and `/proc/meminfo` where they exist; fall back to generic values.
pub(crate) fn read() -> SysInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .unwrap_or(4 << 20);
    SysInfo {
        model: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        vendor: field("vendor_id").unwrap_or_else(|| "unknown".to_string()),
        simd_f32_lanes: simd_f32_lanes(),
        mem_bytes: mem_kib * 1024,
    }
}

/// f32 lanes of the widest vector unit available at run time.
pub(crate) fn simd_f32_lanes() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return 16;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return 8;
        }
        4
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        4
    }
}
