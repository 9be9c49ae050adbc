//! The guide's chapters (`guide/src/`) as doc-tests: every Rust block of the book
//! compiles and runs under `cargo test`, so a snippet that no longer matches the
//! API fails the tests. Compiled only when rustdoc collects doc-tests; the crate
//! itself never contains it.

macro_rules! chapters {
    ($($name:ident => $file:literal),* $(,)?) => {$(
        #[doc = include_str!(concat!("../guide/src/", $file))]
        mod $name {}
    )*};
}

chapters! {
    introduction => "introduction.md",
    five_stages => "five-stages.md",
    cpu_vs_gpu => "cpu-vs-gpu.md",
    amdahl_transfer => "amdahl-transfer.md",
    coexecution => "coexecution.md",
    nbody => "nbody.md",
    gemm_roofline => "gemm-roofline.md",
    writing_kernels => "writing-kernels.md",
    queues_events => "queues-events.md",
    task_graphs => "task-graphs.md",
    mpi => "mpi.md",
}
