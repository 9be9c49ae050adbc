//! Bench suite `opencl` (not implemented yet).

pub fn run(_args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("suite opencl: not implemented yet");
    Ok(())
}
