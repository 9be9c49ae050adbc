//! Bench suite `coexec` (not implemented yet).

pub fn run(_args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("suite coexec: not implemented yet");
    Ok(())
}
