//! Bench suite `cuda` (not implemented yet).

pub fn run(_args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("suite cuda: not implemented yet");
    Ok(())
}
