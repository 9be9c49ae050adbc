//! A chunked pipeline on one device: upload chunk i+1, compute chunk i and
//! download chunk i−1 at the same time, on three queues.
//!
//! `cargo run --release --example pipeline -- --device opencl --chunks 16 --timeline pipeline.svg`
//!
//! The data is split into chunks; each chunk is uploaded on the upload queue,
//! transformed by a kernel on the compute queue (`iters` steps of `y = y·a + b`
//! per element, to balance compute against transfer), and downloaded on the
//! download queue into its own host buffer. No command waits on the host: the
//! queues order themselves through events (`Queue::wait_for`) and the buffers'
//! hazards (two device buffers per stage are reused, so chunk i+2's upload waits
//! for chunk i's kernel to have read its buffer). The same work is then run on a
//! single queue, serialized, and the example prints the overlap achieved:
//! serialized time ÷ pipelined time (1.0 = no overlap; a balanced three-stage
//! pipeline can approach 3 on a device with separate copy engines; on a host-CPU
//! device every stage uses the same cores, so expect about 1).

use std::time::Instant;

use clap::Parser;
use offload::{Access, Arg, Buffer, Device, HostBuffer, Kernel, LaunchConfig, Param, Queue, Runtime, Split};

/// Pipeline chunks through upload, compute and download queues.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Device selector: cpu, opencl, opencl:1, cuda, cuda:0 (default: $OFFLOAD_DEVICE or cpu).
    #[arg(long)]
    device: Option<String>,
    /// Elements in all.
    #[arg(long, default_value_t = 1 << 24)]
    n: usize,
    /// Chunks.
    #[arg(long, default_value_t = 16)]
    chunks: usize,
    /// Steps of `y = y·a + b` per element (compute per byte moved).
    #[arg(long, default_value_t = 32)]
    iters: u32,
    /// Write an SVG timeline of the pipelined run.
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
    /// Write a Chrome trace of the pipelined run.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
}

const CL: &str = r#"
__kernel void poly(__global const float* x, __global float* y, const uint iters, const uint offset, const uint count) {
    uint i = get_global_id(0);
    if (i < count) {
        float v = x[i];
        for (uint k = 0; k < iters; ++k) v = v * 0.999f + 0.001f;
        y[i] = v;
    }
}
"#;

const CU: &str = r#"
extern "C" __global__ void poly(const float* x, float* y, unsigned iters, unsigned offset, unsigned count) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) {
        float v = x[i];
        for (unsigned k = 0; k < iters; ++k) v = v * 0.999f + 0.001f;
        y[i] = v;
    }
}
"#;

fn poly() -> offload::Result<Kernel> {
    let each = Split::Elementwise { per_item: 1 };
    let b = Kernel::builder("poly")
        .param(Param::buffer::<f32>("x", Access::Read, each))
        .param(Param::buffer::<f32>("y", Access::Write, each))
        .param(Param::scalar::<u32>("iters"))
        .param(Param::Offset)
        .param(Param::Count);
    // SAFETY: both sources declare this signature and touch x[i], y[i] only for
    // i < count, the checked extent of both buffers.
    let b = unsafe { b.opencl(CL, "poly").cuda(CU, "poly") };
    b.cpu(|ctx| {
        let items = ctx.items_below(ctx.count());
        let iters: u32 = ctx.scalar(2);
        let x = &ctx.input::<f32>(0)[items.clone()];
        let y = ctx.output::<f32>(1);
        for (o, v) in y.iter_mut().zip(x) {
            let mut v = *v;
            for _ in 0..iters {
                v = v * 0.999 + 0.001;
            }
            *o = v;
        }
    })
    .build()
}

/// The expected value of one element.
fn expect(x: f32, iters: u32) -> f32 {
    let mut v = x;
    for _ in 0..iters {
        v = v * 0.999 + 0.001;
    }
    v
}

struct Stages {
    up: Queue,
    compute: Queue,
    down: Queue,
}

/// Run every chunk through the three queues; returns the host buffers in order.
fn run(
    dev: &Device,
    q: &Stages,
    k: &Kernel,
    input: &[f32],
    chunk: usize,
    iters: u32,
) -> Result<Vec<HostBuffer<f32>>, Box<dyn std::error::Error>> {
    let ins: [Buffer<f32>; 2] = [dev.alloc(chunk)?, dev.alloc(chunk)?];
    let mut outs: [Buffer<f32>; 2] = [dev.alloc(chunk)?, dev.alloc(chunk)?];
    let mut pending = Vec::new();
    // ANCHOR: chunks
    for (i, part) in input.chunks(chunk).enumerate() {
        let slot = i % 2;
        let n = part.len();
        let mut host = HostBuffer::new(dev, chunk)?;
        host[..n].copy_from_slice(part);
        let up = q.up.write_from(&ins[slot], host)?;
        q.compute.wait_for(up.event());
        let cfg = LaunchConfig::for_items(n, dev.info());
        let args = [
            Arg::input(&ins[slot]),
            Arg::output(&mut outs[slot]),
            iters.into(),
            0u32.into(),
            (n as u32).into(),
        ];
        let ran = q.compute.launch(k, &cfg, &args)?;
        q.down.wait_for(&ran);
        let down = q.down.read(&outs[slot], HostBuffer::new(dev, chunk)?)?;
        pending.push((up, down, n));
    }
    // ANCHOR_END: chunks
    let mut result = Vec::with_capacity(pending.len());
    for (up, down, _) in pending {
        up.wait()?;
        result.push(down.wait()?);
    }
    Ok(result)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.chunks == 0 || args.n < args.chunks || args.n > u32::MAX as usize {
        return Err("need 1 <= --chunks <= --n <= 2^32-1".into());
    }
    let rt = Runtime::new()?;
    let dev = match &args.device {
        Some(sel) => rt.device(sel)?,
        None => rt.default_device()?,
    };
    let k = poly()?;
    dev.build(&k)?;
    let input: Vec<f32> = (0..args.n).map(|i| (i % 4096) as f32 / 4096.0).collect();
    let chunk = args.n.div_ceil(args.chunks);
    println!(
        "{} chunks of {chunk} f32 on {} ({}), {} steps per element",
        args.chunks,
        dev.label(),
        dev.info().name,
        args.iters
    );

    // Warm up (first launches compile per work-group size on some drivers).
    let one = Stages {
        up: dev.queue()?,
        compute: dev.queue()?,
        down: dev.queue()?,
    };
    run(&dev, &one, &k, &input[..chunk.min(args.n)], chunk, args.iters)?;

    // Serialized: every stage on one queue.
    // ANCHOR: serial
    let q = dev.queue()?;
    let serial = Stages {
        up: q.clone(),
        compute: q.clone(),
        down: q,
    };
    // ANCHOR_END: serial
    let t = Instant::now();
    run(&dev, &serial, &k, &input, chunk, args.iters)?;
    let t_serial = t.elapsed();

    // Pipelined: three queues.
    rt.profiler().take();
    let t = Instant::now();
    let out = run(&dev, &one, &k, &input, chunk, args.iters)?;
    let t_pipe = t.elapsed();

    let mut bad = 0usize;
    for (c, part) in out.iter().zip(input.chunks(chunk)) {
        for (o, x) in c.iter().zip(part) {
            if (o - expect(*x, args.iters)).abs() > 1e-5 {
                bad += 1;
            }
        }
    }
    if bad > 0 {
        return Err(format!("{bad} elements differ from the host computation").into());
    }
    println!(
        "serialized (one queue) {:.3} ms, pipelined (three queues) {:.3} ms: overlap {:.2}x; verified",
        t_serial.as_secs_f64() * 1e3,
        t_pipe.as_secs_f64() * 1e3,
        t_serial.as_secs_f64() / t_pipe.as_secs_f64()
    );
    let profile = rt.profile();
    println!("{}", profile.report());
    if let Some(p) = &args.timeline {
        profile.write_svg_timeline(p)?;
        println!("SVG timeline written to {}", p.display());
    }
    if let Some(p) = &args.trace {
        profile.write_chrome_trace(p)?;
        println!("Chrome trace written to {}", p.display());
    }
    Ok(())
}
